"""Shared pieces of the command line: the command registry and the common chores.

:class:`Command` (a name, a one-line help, a function adding its arguments, a
function ``run(args) -> exit code``), :data:`COMMANDS` (name -> Command, in
``--help`` order), :func:`register`, and the helpers every verb uses (loading a
model, reading points, refusing to overwrite inputs, atomic outputs).  Verb
modules (``cli_info``, ``cli_analyze``, ...) import this module only;
:mod:`leo_verify.cli` imports them to build the parser, so there is no import
circle.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from .errors import DataError, InputFileError, OutputError, UsageError
from .util import atomic_write_bytes, read_json

__all__ = ["Command", "COMMANDS", "register", "ArgumentParser", "load_model", "read_points",
           "check_output_path", "write_output", "print_json", "fraction_text", "PROG", "HelpFormatter"]

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
    example: str = ""  #: one example command line, shown at the end of the verb's --help


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option that has a default shows it: ``(default: 60.0)``, unless its help says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        if isinstance(action.default, list) and not action.default:
            return text
        return f"{text} (default: %(default)s)"


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
