"""The ``leo-verify`` command line.

Each subcommand is a :class:`Command`: a name, a one-line help, a function
that adds its arguments to an :class:`argparse.ArgumentParser`, and a function
``run(args) -> exit code``.  :data:`COMMANDS` maps names to commands; to add
one (``analyze``, ``compress``, ``check``, ``recheck``), write the two
functions -- in another module if they are long -- and :func:`register` it.
The shared chores (loading a model, reading points, writing JSON/NPY outputs)
are the helpers below.

Errors: every :class:`~leo_verify.errors.LeoError` becomes one line
``leo-verify: error: <message>`` on stderr and the process exits with the
error's ``exit_code`` (see :data:`leo_verify.errors.EXIT_CODES`).  Usage
errors exit 3 (argparse's default 2 is reserved for ``check`` = unknown).
Ctrl-C exits 130.  Anything else is a bug: the traceback is printed and the
exit code is 70.  Set ``LEO_VERIFY_DEBUG=1`` to get tracebacks for
``LeoError`` too.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import traceback
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from . import __version__
from .errors import DataError, InputFileError, LeoError, OutputError, UsageError
from .util import atomic_write_bytes, read_json, sha256_file

__all__ = ["main", "Command", "COMMANDS", "register", "build_parser"]

PROG = "leo-verify"
EXIT_BUG = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout was closed (e.g. `| head`)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error raises :class:`UsageError` (exit 3, one line)."""

    def error(self, message):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see '{self.prog} --help')")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: subcommand name -> Command, in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {}


def register(cmd: Command) -> Command:
    if cmd.name in COMMANDS:
        raise ValueError(f"command {cmd.name!r} registered twice")
    COMMANDS[cmd.name] = cmd
    return cmd


# --------------------------------------------------------------------------
# shared helpers

def load_model(path: str):
    """Load and lint a network (any format :func:`leo_verify.io.load` knows)."""
    from .io import load
    return load(path)


def _number(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataError(f"{where} = {_short(v)} is not a number")
    if isinstance(v, int) and abs(v) > sys.float_info.max:
        raise DataError(f"{where} = {_short(v)} is too large for float64")
    f = float(v)
    if not math.isfinite(f):
        raise DataError(f"{where} = {f} is not finite")
    return f


def _short(v, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "..."


def read_points(path: str, n: int) -> tuple[np.ndarray, bool]:
    """Points from a ``.json`` (a list of numbers, or a list of lists) or ``.npy`` file.

    Returns ``(points, single)``: a float64 array (k, n) and whether the file
    held one point as a flat list / 1-D array (outputs mirror that shape).
    """
    low = path.lower()
    if not (low.endswith(".json") or low.endswith(".npy")):
        raise UsageError(f"input file {path!r}: expected a .json or .npy file")
    if not os.path.exists(path):
        raise InputFileError(f"input file {path!r} does not exist")
    if not os.path.isfile(path):
        raise InputFileError(f"input path {path!r} is not a file")
    if low.endswith(".json"):
        data = read_json(path, what="input file", error=DataError)
        if not isinstance(data, list) or not data:
            raise DataError(f"input file {path!r}: expected a non-empty list of numbers (one point) "
                            f"or a list of lists (several points), got {type(data).__name__}"
                            f"{' (empty)' if data == [] else ''}")
        single = not isinstance(data[0], list)
        rows = [data] if single else data
        pts = np.empty((len(rows), n), dtype=np.float64)
        for r, row in enumerate(rows):
            label = "the point" if single else f"point {r}"
            if not isinstance(row, list):
                raise DataError(f"input file {path!r}: {label} = {_short(row)} is not a list of numbers")
            if len(row) != n:
                raise DataError(f"input file {path!r}: {label} has {len(row)} values, "
                                f"the network has {n} inputs")
            for i, v in enumerate(row):
                where = f"input file {path!r}: " + (f"value [{i}]" if single else f"point {r} value [{i}]")
                pts[r, i] = _number(v, where)
        return pts, single
    try:
        # memory-mapped: a header declaring more data than the file holds is refused by
        # mmap instead of allocating the declared size (a 10^12-row header, 100 bytes long)
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"input file {path!r}: not a valid .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray):
        if hasattr(arr, "close"):
            arr.close()
        raise DataError(f"input file {path!r}: expected one .npy array, got an .npz archive")
    if arr.dtype.kind not in "iuf":
        raise DataError(f"input file {path!r}: array has dtype {arr.dtype}; expected real numbers")
    if arr.ndim not in (1, 2) or arr.shape[-1] != n or arr.size == 0:
        raise DataError(f"input file {path!r}: array has shape {arr.shape}; expected ({n},) for one "
                        f"point or (k, {n}) for k points (the network has {n} inputs)")
    from .io import limits
    if arr.size > limits.MAX_ELEMENTS:
        raise DataError(f"input file {path!r}: array has {arr.size} values, more than the limit of "
                        f"{limits.MAX_ELEMENTS} (leo_verify.io.limits.MAX_ELEMENTS)")
    single = arr.ndim == 1
    pts = np.atleast_2d(np.array(arr, dtype=np.float64))  # a copy: the map is released
    del arr
    bad = np.argwhere(~np.isfinite(pts))
    if bad.size:
        r, i = (int(v) for v in bad[0])
        label = f"value [{i}]" if single else f"point {r} value [{i}]"
        raise DataError(f"input file {path!r}: {label} = {pts[r, i]} is not finite")
    return pts, single


def check_output_path(out: str, inputs: list[str]) -> None:
    """Refuse to overwrite an input; the output's folder must exist."""
    real = os.path.realpath(out)
    for p in inputs:
        if p and os.path.exists(p) and os.path.realpath(p) == real:
            raise OutputError(f"output {out!r} would overwrite the input {p!r}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise InputFileError(f"output folder {parent!r} does not exist")
    if os.path.isdir(out):
        raise OutputError(f"output {out!r} is a folder")


def write_output(out: str, data: bytes) -> None:
    """Write ``data`` to ``out`` atomically (a reader never sees a partial file)."""
    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        raise InputFileError(f"cannot write {out!r}: {exc.strerror or exc}") from None


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


def fraction_text(q: Fraction) -> str:
    """An exact rational as ``"p/q"`` (always with a denominator)."""
    q = Fraction(q)
    return f"{q.numerator}/{q.denominator}"


# --------------------------------------------------------------------------
# info

def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="network file (.onnx, .nnet, .pt/.pth)")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")


def model_facts(path: str, graph) -> dict:
    s = graph.summary()
    meta = graph.metadata
    fmt = meta.get("format") or os.path.splitext(path)[1].lstrip(".").lower() or "unknown"
    facts = {
        "file": path,
        "sha256": sha256_file(path),
        "format": fmt,
        "opset": meta.get("opset", meta.get("opset_version")),
        "dtype": meta.get("dtype"),
        "name": s["name"],
        "inputs": s["inputs"],
        "outputs": s["outputs"],
        "hidden_layers": [{"name": n, "width": w} for n, w in zip(s["layer_names"], s["widths"])],
        "neurons": s["neurons"],
        "parameters": s["parameters"],
        "nodes": s["nodes"],
        "chain": graph.is_chain(),
        "head": graph.op(graph.output_name).head_text(),
    }
    return facts


def _info_run(args) -> int:
    graph = load_model(args.model)
    facts = model_facts(args.model, graph)
    if args.json:
        print_json(facts)
        return 0
    fmt = facts["format"]
    extra = ", ".join(f"{k} {facts[k]}" for k in ("opset", "dtype") if facts[k] is not None)
    layers = facts["hidden_layers"]
    lines = [
        f"model       {facts['file']}",
        f"sha256      {facts['sha256']}",
        f"format      {fmt}{f' ({extra})' if extra else ''}",
        f"inputs      {facts['inputs']}",
        f"outputs     {facts['outputs']}" + (f" logits, then {facts['head']}"
                                              if facts["head"] != "none" else ""),
        f"hidden      {len(layers)} ReLU layer(s)" + (":" if layers else ""),
    ]
    width = max((len(l["name"]) for l in layers), default=0)
    lines += [f"  {l['name']:<{width}}  {l['width']}" for l in layers]
    lines += [
        f"neurons     {facts['neurons']}",
        f"parameters  {facts['parameters']}",
        f"structure   {'chain' if facts['chain'] else 'DAG'} "
        + ", ".join(f"{v} {k}" for k, v in facts["nodes"].items() if v),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


register(Command("info", "show a network's inputs, outputs, layers, size and hash",
                 _info_args, _info_run))


# --------------------------------------------------------------------------
# eval

def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="network file (.onnx, .nnet, .pt/.pth)")
    p.add_argument("-i", "--input", required=True, metavar="FILE",
                   help="points: .json (a list of numbers, or a list of lists) or .npy "
                        "(shape (n,) or (k, n))")
    p.add_argument("--exact", action="store_true",
                   help="evaluate in exact rational arithmetic (inputs taken exactly as float64); "
                        "prints 'p/q' strings plus floats (with an output head: the exact logits, "
                        "and the head applied to them in float64)")
    p.add_argument("-o", "--output", metavar="OUT", help="write the outputs to OUT.json or OUT.npy "
                                                          "instead of printing JSON")


def _eval_run(args) -> int:
    out = args.output
    if out is not None:
        low = out.lower()
        if not (low.endswith(".json") or low.endswith(".npy")):
            raise UsageError(f"output {out!r}: expected a .json or .npy file name")
        if args.exact and low.endswith(".npy"):
            raise UsageError("--exact results are rationals: write them to a .json file, not .npy")
        check_output_path(out, [args.model, args.input])
    graph = load_model(args.model)
    pts, single = read_points(args.input, graph.input_size)
    out_op = graph.op(graph.output_name)
    if args.exact:
        from .semantics import evaluate_exact
        exact = [evaluate_exact(graph, [float(v) for v in row]) for row in pts]
        floats = [[float(q) for q in row] for row in exact]
        texts = [[fraction_text(q) for q in row] for row in exact]
        if out_op.head != "none":
            # the exact logits; the head (irrational in general) in float64 from them
            from .heads import apply_head
            floats = apply_head(out_op.head, dict(out_op.head_attrs),
                                np.array(floats, dtype=np.float64).reshape(len(exact), -1)).tolist()
        result = {"outputs": floats[0] if single else floats,
                  "exact": texts[0] if single else texts}
    else:
        from .semantics import evaluate
        ys = evaluate(graph, pts, apply_head=True)
        result = {"outputs": (ys[0] if single else ys).tolist()}
    if out_op.head != "none":
        result["head"] = out_op.head
    if out is None:
        print_json(result)
        return 0
    if out.lower().endswith(".npy"):
        arr = np.asarray(result["outputs"],
                         dtype=np.int64 if out_op.head == "argmax" else np.float64)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        write_output(out, buf.getvalue())
    else:
        write_output(out, (json.dumps(result) + "\n").encode("utf-8"))
    sys.stdout.write(f"{PROG}: wrote {len(pts)} output vector(s) to {out}\n")
    return 0


register(Command("eval", "evaluate a network at points (float64, or exactly with --exact); "
                         "an output head (softmax, ..., argmax) is applied",
                 _eval_args, _eval_run))


# --------------------------------------------------------------------------
# entry point

def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Lossless, certified compression of ReLU networks.",
        epilog="Exit codes: 0 ok, 3 usage, 4 missing file, 5 malformed model, 6 unsupported op, "
               "7 invalid network, 8 bad domain, 9 bad input data, 10 output refused, "
               "70 internal error, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=ArgumentParser)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    parts = [part.strip() for part in text.splitlines() if part.strip()]
    return " ".join(parts) or type(exc).__name__


def main(argv=None) -> int:
    """Run the CLI; returns the exit code (see :data:`leo_verify.errors.EXIT_CODES`)."""
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version exit 0 through argparse
            return exc.code if isinstance(exc.code, int) else 0
        return int(args._run(args) or 0)
    except LeoError as exc:
        if os.environ.get("LEO_VERIFY_DEBUG"):
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout went away (e.g. piped into `head`): stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
    except Exception:
        traceback.print_exc()
        print(f"{PROG}: internal error (a bug): please report it with the traceback above",
              file=sys.stderr)
        return EXIT_BUG


# commands defined in their own modules register themselves on import
from . import cli_analyze, cli_compress  # noqa: E402,F401
from . import cli_check  # noqa: E402,F401
from . import cli_report  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
