"""Derives the step decoder (models/onnx/rnn_vae_decoder_step.onnx) from the committed RNN-VAE
decoder (models/onnx/rnn_vae_decoder.onnx): the same weights, one GRU step per call.

    z [B, D], h [B, H], first [B, 1] -> features [B, F], h_next [B, H]

`first` = 1 starts a sequence (the state is the decoder's initial one, tanh(init(z)), and `h`
is ignored); `first` = 0 continues from `h`. Called L times, first = 1 then 0, it gives the L
steps of the full decoder (models/tests/models.rs checks it against the full decoder). Synthetic
users decode a step only for a window they are active in, keeping the state between windows.

    python models/training/export_decoder_step.py [--onnx-dir models/onnx]

Needs the `onnx` package (models/training/requirements.txt); train.sh runs it after train.py.
"""

import argparse
import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def find(graph, op):
    nodes = [n for n in graph.node if n.op_type == op]
    if len(nodes) != 1:
        raise SystemExit(f"expected one {op} node in the decoder, found {len(nodes)}")
    return nodes[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-dir", default="models/onnx")
    args = ap.parse_args()
    src = pathlib.Path(args.onnx_dir) / "rnn_vae_decoder.onnx"
    dst = pathlib.Path(args.onnx_dir) / "rnn_vae_decoder_step.onnx"
    full = onnx.load(str(src))
    g = full.graph
    inits = {t.name: t for t in g.initializer}
    gemm, gru, matmul = find(g, "Gemm"), find(g, "GRU"), find(g, "MatMul")
    add_out = next(n for n in g.node if n.op_type == "Add" and matmul.output[0] in n.input)
    muls = [n for n in g.node if n.op_type == "Mul" and any(i.startswith("norm.") for i in n.input)]
    keep, std = "norm.keep", "norm.std"
    if {i for m in muls for i in m.input if i.startswith("norm.")} != {keep, std}:
        raise SystemExit("the decoder's output is not scaled by norm.keep and norm.std")
    d = inits[gemm.input[1]].dims[1]
    hidden = inits[gemm.input[1]].dims[0]
    f = inits[matmul.input[1]].dims[1]
    weights = [gemm.input[1], gemm.input[2], gru.input[1], gru.input[2], gru.input[3],
               matmul.input[1], next(i for i in add_out.input if i != matmul.output[0]),
               keep, std, "norm.mean"]
    axis0 = numpy_helper.from_array(np.array([0], dtype="int64"), "axis0")
    nodes = [
        helper.make_node("Gemm", ["z", gemm.input[1], gemm.input[2]], ["init_pre"],
                         **{a.name: helper.get_attribute_value(a) for a in gemm.attribute}),
        helper.make_node("Tanh", ["init_pre"], ["h0"]),
        # hs = h + first * (h0 - h)
        helper.make_node("Sub", ["h0", "h"], ["h_delta"]),
        helper.make_node("Mul", ["first", "h_delta"], ["h_start"]),
        helper.make_node("Add", ["h", "h_start"], ["hs"]),
        helper.make_node("Unsqueeze", ["z", "axis0"], ["x_seq"]),
        helper.make_node("Unsqueeze", ["hs", "axis0"], ["h_init"]),
        helper.make_node("GRU", ["x_seq", gru.input[1], gru.input[2], gru.input[3], "", "h_init"],
                         ["y", "y_h"],
                         **{a.name: helper.get_attribute_value(a) for a in gru.attribute}),
        helper.make_node("Squeeze", ["y_h", "axis0"], ["h_next"]),
        helper.make_node("MatMul", ["h_next", matmul.input[1]], ["out_pre"]),
        helper.make_node("Add", ["out_pre", weights[6]], ["out"]),
        helper.make_node("Mul", ["out", keep], ["kept"]),
        helper.make_node("Mul", ["kept", std], ["scaled"]),
        helper.make_node("Add", ["scaled", "norm.mean"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes,
        "rnn_vae_decoder_step",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", d]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", hidden]),
         helper.make_tensor_value_info("first", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", f]),
         helper.make_tensor_value_info("h_next", TensorProto.FLOAT, ["batch", hidden])],
        [inits[w] for w in weights] + [axis0],
    )
    model = helper.make_model(graph, opset_imports=list(full.opset_import),
                              producer_name="personaflow export_decoder_step.py")
    model.ir_version = full.ir_version
    for p in full.metadata_props:
        value = p.value
        if p.key == "personaflow.model":
            info = json.loads(value)
            info["kind"] = "rnn_vae_decoder_step"
            info["hidden"] = hidden
            value = json.dumps(info)
        model.metadata_props.append(onnx.StringStringEntryProto(key=p.key, value=value))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    print(f"wrote {dst} ({dst.stat().st_size} bytes): one step of {src.name}, hidden {hidden}")


if __name__ == "__main__":
    main()
