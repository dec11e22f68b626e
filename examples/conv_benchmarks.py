"""Issue 15's benchmark: compress and certify convolutional networks, then check the emitted
conv net against the original in onnxruntime at 10,000 points of the region.

    python examples/conv_benchmarks.py                          # every row
    python examples/conv_benchmarks.py --only cifar10_small     # rows whose name contains a word
    python examples/conv_benchmarks.py --budget 300 --out out/conv
    # OUT/table.md holds the last run of every row run into OUT

Rows:

* ``cifar10_small eps 0.012 / 0.024``: VNN-COMP 2021 marabou ``cifar10_small.onnx`` (a
  TensorFlow NHWC export) on its two shipped specifications (``../shared/benchmarks/conv``);
* ``cifar_base_kw 2/255 / 8/255 point k``: oval21 ``cifar_base_kw.onnx`` on L-inf balls around
  five points sampled uniformly from ``[0, 1]^3072`` (seeded; no CIFAR data ships offline),
  not clipped (the net takes normalised inputs);
* ``mnist avgpool / maxpool image k``: small conv nets trained here on the MNIST sample
  (``Conv 1->4 3x3 pad 1, ReLU, AveragePool|MaxPool 2x2, Conv 4->8 3x3 stride 2, ReLU, Flatten,
  Gemm 32, ReLU, Gemm 10``, 3 epochs, seeded, exported through ``torch.onnx``) on L-inf balls of
  radius 0.02 around test images, clipped to ``[0, 1]``.

Each row runs ``leo-verify compress`` in a child process (``examples/scale_benchmarks.run_row``:
peak RSS, timings from ``OUT/report.json``), then counts the conv channels of the original and
the emitted ``compressed.onnx`` and runs both in onnxruntime at 10,000 points drawn uniformly
from the region (the box corners' coordinates included: each coordinate is at its lower or
upper bound with probability 1/4 each).  ``max |diff|`` is the largest output difference;
float32 runtimes round both nets differently, so it is ~1e-6, not 0 (the certificate is the
proof; this is a smoke test of the emitted file).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from scale_benchmarks import BENCH, parse_args, run_all  # noqa: E402

CONV = os.path.join(BENCH, "conv")


# ---------------------------------------------------------------------------
# the networks
# ---------------------------------------------------------------------------
def train_conv(pool: str, path: str, *, epochs: int = 3, seed: int = 0) -> None:
    """A small MNIST conv net with an ``AveragePool`` or ``MaxPool`` layer, as ONNX."""
    import torch
    from torch import nn
    from leo_verify.train import load_dataset
    torch.manual_seed(seed)
    x_train, _, y_train, _ = load_dataset("mnist")
    x = torch.tensor(x_train, dtype=torch.float32).reshape(-1, 1, 28, 28)
    y = torch.tensor(y_train, dtype=torch.long)
    pool_layer = nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), pool_layer,
                        nn.Conv2d(4, 8, 3, stride=2), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), path, input_names=["x"], output_names=["y"],
                      dynamo=False)


def write_box(path: str, lo: np.ndarray, hi: np.ndarray) -> None:
    with open(path, "w") as fh:
        json.dump({"lower": lo.tolist(), "upper": hi.tolist()}, fh)


def mnist_ball(path: str, index: int, radius: float = 0.02) -> None:
    from leo_verify.train import load_dataset
    _, x_test, _, _ = load_dataset("mnist")
    x = x_test[index].astype(np.float64)
    write_box(path, np.clip(x - radius, 0, 1), np.clip(x + radius, 0, 1))


def cifar_ball(path: str, k: int, radius: float) -> None:
    centre = np.random.default_rng(1000 + k).uniform(0, 1, 3072)
    write_box(path, centre - radius, centre + radius)


def rows(out: str):
    """``(name, build, model, domain)``: ``build()`` makes missing files."""
    nets = os.path.join(out, "nets")
    small = os.path.join(CONV, "cifar10_small.onnx")
    for eps in ("0.012", "0.024"):
        yield (f"cifar10_small eps {eps}", None, small,
               os.path.join(CONV, f"cifar10_small_index1189_eps{eps}.vnnlib"))
    kw = os.path.join(CONV, "cifar_base_kw.onnx")
    for label, radius in (("2/255", 2 / 255), ("8/255", 8 / 255)):
        for k in range(5):
            box = os.path.join(nets, f"cifar_point{k}_r{label.replace('/', '_')}.json")
            yield (f"cifar_base_kw {label} point {k}", lambda b=box, k=k, r=radius: cifar_ball(b, k, r),
                   kw, box)
    for pool in ("avg", "max"):
        path = os.path.join(nets, f"mnist_conv_{pool}pool.onnx")
        for index in (0, 1):
            box = os.path.join(nets, f"mnist_test{index}_ball0.02.json")
            yield (f"mnist {pool}pool image {index}",
                   lambda p=path, b=box, i=index, pl=pool: (
                       os.path.exists(p) or train_conv(pl, p), mnist_ball(b, i)), path, box)


# ---------------------------------------------------------------------------
# the checks of the emitted file
# ---------------------------------------------------------------------------
def conv_channels(path: str) -> list:
    """Output channels of every convolution of an ONNX file as leo_verify reads it (``Conv``,
    and pools/BatchNormalization that are grouped convolutions), in graph order."""
    from leo_verify.io.onnx import load_onnx
    g = load_onnx(path)
    return [int(len(op.layout.row_channels())) for _, op in g.items()
            if op.kind == "affine" and op.layout is not None]


def sample_region(lo: np.ndarray, hi: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(lo, hi, (n, len(lo)))
    pick = rng.random((n, len(lo)))
    x = np.where(pick < 0.25, lo, np.where(pick > 0.75, hi, x))
    return x


def ort_outputs(path: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dims = [d if isinstance(d, int) else None for d in inp.shape]
    shape = [int(d) for d in dims[1:]]
    if dims[0] is None:
        outs = [sess.run(None, {inp.name: x[i:i + 500].astype(np.float32).reshape([-1] + shape)})[0]
                for i in range(0, len(x), 500)]
        return np.concatenate([o.reshape(len(o), -1) for o in outs])
    return np.stack([sess.run(None, {inp.name: p.astype(np.float32).reshape([1] + shape)})[0].ravel()
                     for p in x])


def agreement(model: str, out: str, domain: str, n: int = 10_000) -> dict:
    from leo_verify.domain import parse_union
    from leo_verify.io.onnx import load_onnx
    (box,) = parse_union([domain], n=load_onnx(model).input_size).boxes  # every row: one box
    lo, hi = np.asarray(box.lower, dtype=np.float64), np.asarray(box.upper, dtype=np.float64)
    x = sample_region(lo, hi, n)
    a = ort_outputs(model, x)
    b = ort_outputs(os.path.join(out, "compressed.onnx"), x)
    return {"points": n, "max_abs_diff": float(np.abs(a - b).max()),
            "same_argmax": int((a.argmax(1) == b.argmax(1)).sum())}


def markdown(results) -> str:
    head = ("| network | region | units | removed | unknown | conv channels before -> after | analysis s "
            "| certification s | verdict | wall s | peak RSS MB | ort max abs diff (10,000 pts) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in results:
        if "units" not in r:
            lines.append(f"| {r['name']} | {r['domain']} | | | | | | | {r['verdict']} | {r['wall_s']} "
                         f"| {r['peak_rss_mb']} | |")
            continue
        ch = f"{r.get('channels_before')} -> {r.get('channels_after')}"
        agree = r.get("agreement", {})
        lines.append(f"| {r['name']} | {r['domain']} | {r['units']} | {r['removed']} | {r['unknown']} | {ch} "
                     f"| {r['analysis_s']:.1f} | {r['certify_s']:.1f} | {r['verdict']} | {r['wall_s']} "
                     f"| {r['peak_rss_mb']} | {agree['max_abs_diff']:.1e} |" if agree else "| |")
    return head + "\n".join(lines) + "\n"


def _check_emitted(row, model, domain, out) -> None:
    if os.path.exists(os.path.join(out, "compressed.onnx")) and "units" in row:
        row["channels_before"] = conv_channels(model)
        row["channels_after"] = conv_channels(os.path.join(out, "compressed.onnx"))
        row["agreement"] = agreement(model, out, domain)


def main(argv=None) -> int:
    args = parse_args(argv, doc=__doc__, out="out/conv", timeout=1800.0)
    os.makedirs(os.path.join(args.out, "nets"), exist_ok=True)
    return run_all(args, rows, markdown, after=_check_emitted)


if __name__ == "__main__":
    sys.exit(main())
