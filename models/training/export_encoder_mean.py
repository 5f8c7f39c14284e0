"""Derives the mean-only encoder (models/onnx/rnn_vae_encoder_mean.onnx) from the committed
RNN-VAE encoder (models/onnx/rnn_vae_encoder.onnx): the encoder's graph cut down to what `mu`
depends on.

    features [B, L, F], mask [B, L], context [B, C] -> mu [B, D]

The encoder also decodes `mu` to score the reconstruction (`recon_error`, the anomaly score),
which onnxruntime runs even when only `mu` is fetched. Where the pipeline needs only the
embedding (the windows view of an active history, which drift compares), this model gives the
same `mu` bit for bit at about half the cost.

    python models/training/export_encoder_mean.py [--onnx-dir models/onnx]

The script checks that its `mu` equals the encoder's exactly, through onnxruntime with one
intra-op thread (as the pipeline runs it), for every batch size up to 64 and several sequence
lengths, before it returns. The Rust side refuses a mean model whose metadata differs from the
encoder's (other than its kind): it was derived from another encoder.

Needs the `onnx` and `onnxruntime` packages (models/training/requirements.txt); train.sh runs it
after train.py.
"""

import argparse
import json
import pathlib

import numpy as np
import onnx
import onnx.utils

KIND = "rnn_vae_encoder_mean"
INPUTS = ["features", "mask", "context"]
OUTPUT = "mu"
# Batch sizes 1..PARITY_MAX_BATCH and these step counts are checked for exact equality.
PARITY_MAX_BATCH = 64
PARITY_STEPS = (16, 7, 1)
PARITY_SEED = 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-dir", default="models/onnx")
    args = ap.parse_args()
    src = pathlib.Path(args.onnx_dir) / "rnn_vae_encoder.onnx"
    dst = pathlib.Path(args.onnx_dir) / "rnn_vae_encoder_mean.onnx"
    full = onnx.load(str(src))
    names = [o.name for o in full.graph.output]
    if OUTPUT not in names:
        raise SystemExit(f"{src} has no output named {OUTPUT} (outputs: {names})")
    cut = onnx.utils.Extractor(full).extract_model(INPUTS, [OUTPUT])
    model = onnx.helper.make_model(cut.graph, opset_imports=list(full.opset_import),
                                   producer_name="personaflow export_encoder_mean.py")
    model.ir_version = full.ir_version
    for p in full.metadata_props:
        value = p.value
        if p.key == "personaflow.model":
            info = json.loads(value)
            info["kind"] = KIND
            value = json.dumps(info)
        model.metadata_props.append(onnx.StringStringEntryProto(key=p.key, value=value))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    kept, dropped = len(model.graph.node), len(full.graph.node) - len(model.graph.node)
    checked = parity(src, dst, full)
    print(f"wrote {dst} ({dst.stat().st_size} bytes): {kept} nodes of {src.name} ({dropped} "
          f"left out); mu identical on {checked} seeded batches")


def parity(src, dst, full):
    """Runs both models on seeded batches of every size up to PARITY_MAX_BATCH; fails unless
    every `mu` is bitwise equal. Returns the number of batches checked."""
    import onnxruntime as ort

    def session(path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    encoder, mean = session(src), session(dst)
    shape = {i.name: i.shape for i in encoder.get_inputs()}
    f, c = shape["features"][2], shape["context"][1]
    rng = np.random.default_rng(PARITY_SEED)
    checked = 0
    for steps in PARITY_STEPS:
        for b in range(1, PARITY_MAX_BATCH + 1):
            feeds = {
                "features": (rng.standard_normal((b, steps, f)) * 3).astype(np.float32),
                "mask": (rng.random((b, steps)) > 0.4).astype(np.float32),
                "context": (rng.random((b, c)) > 0.8).astype(np.float32),
            }
            want = encoder.run([OUTPUT], feeds)[0]
            got = mean.run([OUTPUT], feeds)[0]
            if not np.array_equal(want, got):
                raise SystemExit(f"{dst}: mu differs from {src} at batch {b}, {steps} steps "
                                 f"(max {float(np.abs(want - got).max()):.2e})")
            checked += 1
    return checked


if __name__ == "__main__":
    main()
