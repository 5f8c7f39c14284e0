#!/usr/bin/env python3
"""The model-size study behind models/README.md, "Model size" (issue 21, point 6).

    .venv-train/bin/python models/training/size_study.py speed 64 32 16
    .venv-train/bin/python models/training/size_study.py forecaster 64:7 32:7 64:8 32:8 64:9 32:9

`speed HIDDEN...`: random-weight VAE encoders (with and without the decoder pass behind
`recon_error`) and forecasters at each hidden size, exported like train.py's, timed through
onnxruntime (one intra-op thread, batch 64, seeded normal inputs, best of three); sequences/s.
`forecaster HIDDEN:SEED...`: trains the forecaster alone at each size and seed on train.py's
data (its `--work` directory, which train.sh fills: run it once first) and prints its held-out
MASE, as train.py scores it. Writes nothing in the repository.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train as T  # noqa: E402

WORK = Path.home() / ".cache" / "personaflow" / "model-training"
F, C, BATCH = 33, 31, 64


def sequences_per_sec(path: str, feeds: dict, runs: int = 300) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = {i.name for i in s.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in names}
    for _ in range(20):
        s.run(None, feeds)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(runs):
            s.run(None, feeds)
        best = min(best, time.perf_counter() - t)
    return runs * BATCH / best


class MeanOnly(torch.nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, features, mask, context):
        return self.enc(features, mask, context)[0]


def speed(sizes: list[int]) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, T.SEQUENCE_LEN, F)).astype(np.float32)
    m = (rng.random((BATCH, T.SEQUENCE_LEN)) < 0.5).astype(np.float32)
    m[:, -1] = 1
    c = np.zeros((BATCH, C), np.float32)
    c[:, 0] = 1
    feeds = {"features": x, "mask": m, "context": c}
    ex = tuple(torch.from_numpy(a) for a in (x, m, c))
    axes = {0: "batch", 1: "steps"}
    dyn = {"features": axes, "mask": axes, "context": {0: "batch"}}
    with tempfile.TemporaryDirectory() as tmp:
        for h in sizes:
            torch.manual_seed(0)
            norm = T.Normalise(np.zeros(F, np.float32), np.ones(F, np.float32),
                               np.ones(F, np.float32))
            enc, dec = T.VaeEncoder(norm, F, C, T.LATENT_DIMS, h), T.VaeDecoder(F, T.LATENT_DIMS, h)
            models = {"encoder": (T.EncoderExport(enc, dec), ex, ["mu", "logvar", "recon_error"]),
                      "mean-only": (MeanOnly(enc), ex, ["mu"]),
                      "forecaster": (T.Forecaster(norm, F, T.HORIZON, h), ex[:2], ["forecast"])}
            rates = []
            for name, (module, args, outputs) in models.items():
                path = f"{tmp}/{name}-{h}.onnx"
                torch.onnx.export(module.eval(), args, path, input_names=list(dyn)[:len(args)],
                                  output_names=outputs, dynamic_axes=dyn, opset_version=T.OPSET,
                                  dynamo=False)
                rates.append(f"{name} {sequences_per_sec(path, feeds):.0f}")
            print(f"hidden {h}: " + ", ".join(rates) + " sequences/s", flush=True)


def forecaster(specs: list[str]) -> None:
    T.log = lambda _msg: None
    sim = T.Table(WORK / "sim-out", T.WINDOW_MS)
    rows = np.arange(len(sim.user))
    x, mask = T.build_sequences(sim, rows, T.SEQUENCE_LEN)
    users = np.unique(sim.user)
    # The held-out users train.py draws first from its seed (7).
    val_users = set(np.random.default_rng(T.SIM_SEED).choice(
        users, int(len(users) * T.VALIDATION_SHARE), replace=False))
    val = np.array([u in val_users for u in sim.user])
    y, ok = T.future_demand(sim, rows, T.HORIZON)
    nab = T.Table(WORK / "nab-out", T.NAB_WINDOW_MS)
    nrows = np.arange(len(nab.user))
    nx, nmask = T.build_sequences(nab, nrows, T.SEQUENCE_LEN)
    ny, nok = T.future_demand(nab, nrows, T.HORIZON)
    split = nab.window.min() + int((nab.window.max() - nab.window.min()) * T.NAB_TRAIN_SHARE)
    n_train = np.flatnonzero(nok & (nab.window + T.HORIZON <= split))
    n_test = np.flatnonzero(nok & (nab.window > split))
    fx, fmask, fy = np.concatenate([x, nx]), np.concatenate([mask, nmask]), np.concatenate([y, ny])
    s_train, s_val = np.flatnonzero(ok & ~val), np.flatnonzero(ok & val)
    off = len(x)
    train_idx = np.concatenate([s_train] + [n_train + off] * T.NAB_OVERSAMPLE)
    val_idx = np.concatenate([s_val, n_test + off])
    for spec in specs:
        hidden, seed = map(int, spec.split(":"))
        torch.manual_seed(seed)
        fc, _, _ = T.train_forecaster(fx, fmask, fy, train_idx, val_idx,
                                      np.random.default_rng(seed), T.FORECAST_EPOCHS, hidden)
        m = T.forecast_metrics(fc, sim, x, mask, y, s_val, nab, nx, nmask, ny, n_test)
        print(f"hidden {hidden} seed {seed}: MASE simulator requests "
              f"{m['simulator_requests']['mase']:.4f}, bytes {m['simulator_bytes']['mase']:.4f}, "
              f"NAB daily {m['nab_nyc_taxi_daily']['mase']:.4f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("speed", "forecaster"):
        sys.exit(__doc__)
    torch.set_num_threads(2)
    if sys.argv[1] == "speed":
        speed([int(a) for a in sys.argv[2:]])
    else:
        forecaster(sys.argv[2:])
