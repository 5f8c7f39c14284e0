"""Derives the step decoder (models/onnx/rnn_vae_decoder_step.onnx) from the committed RNN-VAE
decoder (models/onnx/rnn_vae_decoder.onnx): the same weights, one GRU step per call.

    z [B, D], h [B, H], first [B, 1] -> features [B, F], h_next [B, H]

`first` = 1 starts a sequence (the state is the decoder's initial one, tanh(init(z)), and `h`
is ignored); `first` = 0 continues from `h`. Called L times, first = 1 then 0, it gives the L
steps of the full decoder (models/tests/models.rs checks it against the full decoder). Synthetic
users decode a step only for a window they are active in, keeping the state between windows.

    python models/training/export_decoder_step.py [--onnx-dir models/onnx]

The GRU step is written as two Gemms and elementwise ops (onnxruntime's GRU kernel, built
for whole sequences, runs a single step at about half the speed). The script checks the result
against the full decoder through onnxruntime before it returns.

Needs the `onnx` and `onnxruntime` packages (models/training/requirements.txt); train.sh runs it after train.py.
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
    attrs = {a.name: helper.get_attribute_value(a) for a in gru.attribute}
    if attrs.get("linear_before_reset") != 1 or attrs.get("activations") not in (None, ["Sigmoid", "Tanh"]):
        raise SystemExit(f"the decoder's GRU is not PyTorch's (linear_before_reset 1, sigmoid/tanh): {attrs}")
    # ONNX GRU weights, gates in the order z (update), r (reset), n (new).
    w = numpy_helper.to_array(inits[gru.input[1]])[0]   # [3H, D]
    r = numpy_helper.to_array(inits[gru.input[2]])[0]   # [3H, H]
    b = numpy_helper.to_array(inits[gru.input[3]])[0]   # [6H]: input biases, then recurrent
    out_bias = next(i for i in add_out.input if i != matmul.output[0])
    weights = [inits[x] for x in (gemm.input[1], gemm.input[2], matmul.input[1], out_bias,
                                  keep, std, "norm.mean")]
    weights += [numpy_helper.from_array(a.astype(np.float32), name) for a, name in [
        (w, "gru.w"), (b[:3 * hidden], "gru.wb"), (r, "gru.r"), (b[3 * hidden:], "gru.rb")]]
    weights += [numpy_helper.from_array(np.array([v], dtype="int64"), name) for v, name in [
        (0, "at0"), (2 * hidden, "at2h"), (3 * hidden, "at3h"), (1, "axis1")]]
    # One GRU step written as two Gemms and elementwise ops (onnxruntime's GRU kernel, built
    # for sequences, is about half as fast for a single step), PyTorch's equations:
    #   z, r = sigmoid(x W_zr + b_zr + h R_zr + c_zr);  n = tanh(x W_n + b_n + r * (h R_n + c_n))
    #   h' = (1 - z) * n + z * h = n + z * (h - n)
    nodes = [
        helper.make_node("Gemm", ["z", gemm.input[1], gemm.input[2]], ["init_pre"],
                         **{a.name: helper.get_attribute_value(a) for a in gemm.attribute}),
        helper.make_node("Tanh", ["init_pre"], ["h0"]),
        helper.make_node("Sub", ["h0", "h"], ["h_delta"]),
        helper.make_node("Mul", ["first", "h_delta"], ["h_start"]),
        helper.make_node("Add", ["h", "h_start"], ["hs"]),
        helper.make_node("Gemm", ["z", "gru.w", "gru.wb"], ["gx"], transB=1),
        helper.make_node("Gemm", ["hs", "gru.r", "gru.rb"], ["gh"], transB=1),
        helper.make_node("Slice", ["gx", "at0", "at2h", "axis1"], ["gx_zr"]),
        helper.make_node("Slice", ["gh", "at0", "at2h", "axis1"], ["gh_zr"]),
        helper.make_node("Add", ["gx_zr", "gh_zr"], ["zr_pre"]),
        helper.make_node("Sigmoid", ["zr_pre"], ["zr"]),
        helper.make_node("Split", ["zr"], ["update", "reset"], axis=1),
        helper.make_node("Slice", ["gx", "at2h", "at3h", "axis1"], ["gx_n"]),
        helper.make_node("Slice", ["gh", "at2h", "at3h", "axis1"], ["gh_n"]),
        helper.make_node("Mul", ["reset", "gh_n"], ["reset_n"]),
        helper.make_node("Add", ["gx_n", "reset_n"], ["n_pre"]),
        helper.make_node("Tanh", ["n_pre"], ["n"]),
        helper.make_node("Sub", ["hs", "n"], ["h_minus_n"]),
        helper.make_node("Mul", ["update", "h_minus_n"], ["kept_state"]),
        helper.make_node("Add", ["n", "kept_state"], ["h_next"]),
        helper.make_node("MatMul", ["h_next", matmul.input[1]], ["out_pre"]),
        helper.make_node("Add", ["out_pre", out_bias], ["out"]),
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
        weights,
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
    diff = parity(src, dst, d, hidden)
    print(f"wrote {dst} ({dst.stat().st_size} bytes): one step of {src.name}, hidden {hidden}; "
          f"stepped through {PARITY_POINTS} seeded points' sequences, max relative diff {diff:.2e}")


PARITY_POINTS = 256
PARITY_TOLERANCE = 1e-4


def parity(src, dst, d, hidden):
    """Steps the step decoder through the full decoder's sequences for seeded latent points;
    fails above PARITY_TOLERANCE (relative to max(1, |value|))."""
    import onnxruntime as ort

    def session(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    full, step = session(src), session(dst)
    z = np.random.default_rng(0).standard_normal((PARITY_POINTS, d)).astype(np.float32)
    want = full.run(["features"], {"z": z})[0]
    h = np.zeros((PARITY_POINTS, hidden), dtype=np.float32)
    worst = 0.0
    for s in range(want.shape[1]):
        first = np.full((PARITY_POINTS, 1), 1.0 if s == 0 else 0.0, dtype=np.float32)
        x, h = step.run(["features", "h_next"], {"z": z, "h": h, "first": first})
        ref = want[:, s, :]
        worst = max(worst, float((np.abs(x - ref) / np.maximum(1.0, np.abs(ref))).max()))
    if worst > PARITY_TOLERANCE:
        raise SystemExit(f"{dst}: differs from {src} by {worst:.2e} (tolerance {PARITY_TOLERANCE})")
    return worst


if __name__ == "__main__":
    main()
