"""VNNLIB properties: the input region (a box or a union of boxes) and the output conditions.

VNNLIB is a subset of SMT-LIB 2 over reals (VNN-COMP).  A property declares
inputs ``X_0 .. X_{n-1}`` and outputs ``Y_0 .. Y_{m-1}`` and asserts

* bounds on the inputs: ``(<= X_i c)``, ``(>= X_i c)``, the reversed forms
  ``(<= c X_i)``, chains ``(<= lo X_i hi)``, ``(= X_i c)``, conjunctions
  ``(and ...)``, and disjunctions of boxes
  ``(assert (or (and <bounds>) (and <bounds>) ...))``;
* conditions on the outputs (kept as parsed s-expressions in
  :attr:`VnnlibProperty.output_constraints`; they do not restrict the input
  domain).

Only *box* constraints on the inputs are supported: every input constraint
compares one input with a constant.  Constants are decimal or scientific
numbers, ``(- c)``, and constant ``+ - * /`` expressions.

Soundness of the float boxes: a decimal bound such as ``0.6`` is not a float.
The boxes returned here are rounded *outwards* (lower bound down, upper bound
up, by at most one ulp), so each float box contains the exact real box of the
file; the exact rational bounds are kept in :attr:`VnnlibProperty.exact_boxes`.
A strict bound ``(< X_0 c)`` is read as ``<=`` (the closure; again a superset).

The reader is bounded: files over :data:`MAX_BYTES`, nesting deeper than
:data:`MAX_DEPTH`, numeric literals longer than :data:`MAX_NUMBER_CHARS`,
constant expressions whose exact value needs more than :data:`MAX_CONST_BITS`
bits, more than :data:`MAX_BOXES` boxes or more than :data:`MAX_BOX_VALUES`
bounds in all boxes together are refused, and nothing recurses on the file's
nesting, so parse time is linear in the file size (up to big-number
arithmetic on bounded constants).
Every error is a :class:`DomainError` (a missing file: :class:`InputFileError`)
naming the file and, where possible, the line.
"""
from __future__ import annotations

import itertools
import math
import os
import re
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import numpy as np

from ..box import Box
from ..errors import DomainError, InputFileError

__all__ = ["VnnlibProperty", "OutputConstraint", "read_vnnlib", "parse_vnnlib",
           "MAX_BYTES", "MAX_DEPTH", "MAX_BOXES", "MAX_BOX_VALUES", "MAX_CONST_BITS"]

MAX_BYTES = 64 * 1024 * 1024   #: larger files are refused
MAX_DEPTH = 1000               #: deeper parenthesis nesting is refused
MAX_BOXES = 10_000             #: cap on the boxes a product of disjunctions may produce
MAX_NUMBER_CHARS = 1000        #: longer numeric literals are refused
MAX_BOX_VALUES = 10_000_000    #: cap on (number of boxes) x (number of inputs)
MAX_CONST_BITS = 20_000        #: cap on the numerator / denominator size of a constant
_FLOAT_MAX = Fraction(sys.float_info.max)
_MAX_CONST_DEPTH = 50          #: nesting of constant arithmetic like (- (/ 1 3))

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>;[^\n]*)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<string>"(?:[^"]|"")*")
  | (?P<qsym>\|[^|\\]*\|)
  | (?P<atom>[^\s();"|]+)
  | (?P<bad>.)
""", re.VERBOSE | re.DOTALL)

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE]([+-]?\d+))?\Z")
_VAR = re.compile(r"([XY])_(0|[1-9]\d*)\Z")
_NONFINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity",
              "-infinity", "+oo", "-oo", "oo"}
_COMPARE = {"<=", ">=", "<", ">", "="}
_IGNORED_COMMANDS = {"check-sat", "get-model", "set-logic", "set-info", "set-option", "exit",
                     "get-value", "get-info"}


class SExpr(list):
    """A parenthesised list; ``line`` is the line of its opening parenthesis."""

    __slots__ = ("line",)

    def __init__(self, line: int):
        super().__init__()
        self.line = line


@dataclass(frozen=True)
class OutputConstraint:
    """One asserted condition on the outputs: ``expr`` is the s-expression as
    nested tuples of strings, e.g. ``(">=", "Y_0", "3.99")``; ``line`` its line."""

    expr: tuple
    line: int

    def __str__(self) -> str:
        return _show(self.expr, limit=10**9)


@dataclass(frozen=True, eq=False)
class VnnlibProperty:
    """The parsed content of a ``.vnnlib`` file."""

    path: str
    n_inputs: int
    n_outputs: int
    boxes: list                       #: list[Box]: the input region is their union
    exact_boxes: list                 #: list[(lower, upper)] of Fraction lists, per box
    output_constraints: list = field(default_factory=list)  #: list[OutputConstraint]

    @property
    def box(self) -> Box:
        """The input box, when the region is a single box."""
        if len(self.boxes) != 1:
            raise DomainError(f"{self.path}: the input region is a disjunction of "
                              f"{len(self.boxes)} boxes, not a single box")
        return self.boxes[0]


# --------------------------------------------------------------------------
# reading and tokenising

def read_vnnlib(path) -> VnnlibProperty:
    """Parse a ``.vnnlib`` file (see the module doc)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(f"vnnlib file {path!r} does not exist")
    if not os.path.isfile(path):
        raise InputFileError(f"vnnlib path {path!r} is not a file")
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise DomainError(f"{path}: file is {size} bytes; vnnlib files over "
                              f"{_limit()} are refused")
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InputFileError(f"vnnlib file {path!r} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:  # grew while we looked
        raise DomainError(f"{path}: vnnlib files over {_limit()} are refused")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DomainError(f"{path}:{line}: not UTF-8 text (byte {exc.start})") from None
    return parse_vnnlib(text, source=path)


def _limit() -> str:
    mib = 1024 * 1024
    return f"{MAX_BYTES // mib} MiB" if MAX_BYTES % mib == 0 else f"{MAX_BYTES} bytes"


def _tokens(text: str, source: str) -> Iterator[tuple[str, str, int]]:
    """``(kind, text, line)`` for each token, skipping blanks and comments."""
    line = 1
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        tok = m.group()
        if kind == "ws":
            line += tok.count("\n")
            continue
        if kind == "comment":
            continue
        if kind == "bad":
            what = {"\"": "unterminated string literal",
                    "|": "unterminated quoted symbol"}.get(tok, f"unexpected character {tok!r}")
            raise DomainError(f"{source}:{line}: syntax error: {what}")
        yield kind, tok, line
        if kind == "string":
            line += tok.count("\n")


def _top_level(text: str, source: str) -> Iterator[SExpr]:
    """Yield the top-level s-expressions one at a time (iteratively, depth-bounded)."""
    stack: list[SExpr] = []
    for kind, tok, line in _tokens(text, source):
        if kind == "open":
            if len(stack) >= MAX_DEPTH:
                raise DomainError(f"{source}:{line}: nesting deeper than {MAX_DEPTH} levels is refused")
            stack.append(SExpr(line))
        elif kind == "close":
            if not stack:
                raise DomainError(f"{source}:{line}: syntax error: unbalanced ')'")
            done = stack.pop()
            if stack:
                stack[-1].append(done)
            else:
                yield done
        else:
            if not stack:
                raise DomainError(f"{source}:{line}: syntax error: {tok[:40]!r} outside parentheses")
            stack[-1].append(tok)
    if stack:
        raise DomainError(f"{source}:{stack[-1].line}: syntax error: unbalanced '(' "
                          f"(opened on line {stack[-1].line} and never closed)")


def _show(e, limit: int = 120) -> str:
    """Text of an s-expression (iterative), cut at ``limit`` characters."""
    out: list[str] = []
    n = 0
    stack = [e]
    while stack and n <= limit:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            out.append("(")
            stack.append(")")
            for i, sub in enumerate(reversed(item)):
                stack.append(sub)
                if i < len(item) - 1:
                    stack.append(" ")
            n += 1
        else:
            out.append(item)
            n += len(item)
    s = "".join(out)
    return s if n <= limit and not stack else s[:limit] + " ..."


def _to_tuple(e):
    """An SExpr as nested tuples of strings (iterative: no recursion on nesting)."""
    if not isinstance(e, list):
        return e
    # post-order: build children first
    result = {}
    stack = [(e, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            result[id(node)] = tuple(result[id(c)] if isinstance(c, list) else c for c in node)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in node if isinstance(c, list))
    return result[id(e)]


# --------------------------------------------------------------------------
# semantics

class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.inputs: dict[int, int] = {}    # index -> line of declaration
        self.outputs: dict[int, int] = {}
        # top-level bounds: index -> (value, text, line)
        self.lower: dict[int, tuple] = {}
        self.upper: dict[int, tuple] = {}
        self.disjunctions: list[tuple[int, list]] = []   # (line, [bounds of each disjunct])
        self.output_constraints: list[OutputConstraint] = []

    def fail(self, line, msg):
        where = f"{self.source}:{line}" if line else self.source
        raise DomainError(f"{where}: {msg}")

    # -- commands ---------------------------------------------------------
    def command(self, e: SExpr):
        if not e or not isinstance(e[0], str):
            self.fail(e.line, f"expected a command like (declare-const ...) or (assert ...), "
                              f"got {_show(e)}")
        head = e[0]
        if head == "declare-const":
            if len(e) != 3 or not all(isinstance(t, str) for t in e[1:]):
                self.fail(e.line, f"expected (declare-const NAME Real), got {_show(e)}")
            self.declare(e[1], e[2], e.line)
        elif head == "declare-fun":
            if len(e) != 4 or not isinstance(e[1], str) or e[2] != [] or not isinstance(e[3], str):
                self.fail(e.line, f"expected (declare-fun NAME () Real), got {_show(e)}")
            self.declare(e[1], e[3], e.line)
        elif head == "assert":
            if len(e) != 2:
                self.fail(e.line, f"assert takes one formula, got {len(e) - 1}: {_show(e)}")
            self.assertion(e[1], e.line)
        elif head in _IGNORED_COMMANDS:
            pass
        else:
            self.fail(e.line, f"unsupported command {head!r} (VNNLIB uses declare-const and assert)")

    def declare(self, name: str, sort: str, line: int):
        if sort != "Real":
            self.fail(line, f"variable {name!r} has sort {sort!r}; only Real is supported")
        m = _VAR.match(name)
        if not m:
            self.fail(line, f"unsupported variable name {name!r} (expected X_i for inputs "
                            f"and Y_j for outputs)")
        table = self.inputs if m.group(1) == "X" else self.outputs
        idx = int(m.group(2))
        if idx in table:
            self.fail(line, f"variable {name} declared twice (first on line {table[idx]})")
        table[idx] = line

    # -- expressions ------------------------------------------------------
    def variables(self, e, line: int) -> tuple[set, set]:
        """Input and output indices an expression mentions; checks every symbol."""
        xs, ys = set(), set()
        stack = [(e, line)]
        while stack:
            item, ln = stack.pop()
            if isinstance(item, list):
                ln = item.line
                for k, sub in enumerate(item):
                    if k == 0 and isinstance(sub, str):
                        continue  # operator position
                    stack.append((sub, ln))
                continue
            if _NUMBER.match(item):
                continue
            m = _VAR.match(item)
            if m:
                idx = int(m.group(2))
                table, into = (self.inputs, xs) if m.group(1) == "X" else (self.outputs, ys)
                if idx not in table:
                    self.fail(ln, f"undeclared variable {item}")
                into.add(idx)
            elif item.lower() in _NONFINITE:
                self.fail(ln, f"{item!r} is not a finite number; bounds must be finite")
            else:
                self.fail(ln, f"undeclared variable or unknown symbol {item[:40]!r}")
        return xs, ys

    def number(self, tok: str, line: int) -> Fraction:
        if len(tok) > MAX_NUMBER_CHARS:
            self.fail(line, f"numeric literal of {len(tok)} characters is refused")
        m = _NUMBER.match(tok)
        if not m:
            if tok.lower() in _NONFINITE:
                self.fail(line, f"{tok!r} is not a finite number; bounds must be finite")
            self.fail(line, f"expected a number, got {tok[:40]!r}")
        if m.group(1) is not None and abs(int(m.group(1))) > 400:
            # beyond float64 either way; avoid building a huge rational
            if int(m.group(1)) > 0 and Fraction(tok.lower().split("e")[0]) != 0:
                self.fail(line, f"number {tok!r} is not finite in float64")
            if Fraction(tok.lower().split("e")[0]) != 0:
                self.fail(line, f"number {tok!r} is too small in magnitude (|exponent| > 400)")
            return Fraction(0)
        return Fraction(tok)

    def constant(self, e, line: int, depth: int = 0) -> Fraction:
        """Value of a constant expression: a number, (- c), (+ c ...), (* c ...), (/ c d)."""
        if isinstance(e, str):
            return self.number(e, line)
        line = e.line
        if depth > _MAX_CONST_DEPTH:
            self.fail(line, "constant expression nested too deeply")
        if len(e) < 2 or not isinstance(e[0], str) or e[0] not in ("-", "+", "*", "/"):
            self.fail(line, f"expected a constant, got {_show(e)}")
        vals = [self.constant(a, line, depth + 1) for a in e[1:]]
        op = e[0]
        if op == "-" and len(vals) == 1:
            return -vals[0]
        out = vals[0] if op != "*" else Fraction(1)
        for v in (vals[1:] if op != "*" else vals):
            # one step at a time, each bounded: a long product of big numbers
            # would otherwise take quadratic time
            if op == "-":
                out -= v
            elif op == "+":
                out += v
            elif op == "*":
                out *= v
            else:
                if v == 0:
                    self.fail(line, f"division by zero in {_show(e)}")
                out /= v
            if max(out.numerator.bit_length(), out.denominator.bit_length()) > MAX_CONST_BITS:
                self.fail(line, f"constant expression {_show(e, limit=40)} is too large: its exact "
                                f"value needs more than {MAX_CONST_BITS} bits (MAX_CONST_BITS)")
        return out

    def const_text(self, e) -> str:
        if isinstance(e, str):
            return e if len(e) <= 40 else e[:40] + "..."
        return _show(e, limit=40)

    def box_atom(self, a, line: int) -> list[tuple]:
        """Bounds ``(index, 'lo'|'hi', value, text, line)`` from one input atom."""
        line = a.line if isinstance(a, list) else line
        ok = (isinstance(a, list) and len(a) >= 3 and isinstance(a[0], str) and a[0] in _COMPARE)
        terms = a[1:] if ok else []
        is_var = [isinstance(t, str) and _VAR.match(t) is not None for t in terms]
        ok = ok and all(not (is_var[k] and is_var[k + 1]) for k in range(len(terms) - 1))
        ok = ok and all((isinstance(t, str) and _VAR.match(t) and t[0] == "X") or
                        not self.variables(t, line)[0] for t in terms)
        if not ok:
            self.fail(line, f"only box constraints on inputs are supported (each input constraint "
                            f"must compare one input X_i with a constant, like (<= X_0 0.5)); "
                            f"got {_show(a)}")
        op = a[0]
        out = []
        for k in range(len(terms) - 1):
            left, right = terms[k], terms[k + 1]
            if is_var[k]:
                var, const, var_left = left, right, True
            elif is_var[k + 1]:
                var, const, var_left = right, left, False
            else:
                continue  # constant-constant link of a chain, e.g. (<= 0 1 X_0)
            idx = int(var[2:])
            val = self.constant(const, line)
            if abs(val) > _FLOAT_MAX:
                self.fail(line, f"bound {self.const_text(const)} is not finite in float64")
            txt = self.const_text(const)
            # "var <= c" or "c >= var" -> upper bound
            if op == "=":
                out += [(idx, "lo", val, txt, line), (idx, "hi", val, txt, line)]
            elif (op in ("<=", "<")) == var_left:
                out.append((idx, "hi", val, txt, line))
            else:
                out.append((idx, "lo", val, txt, line))
        if not out:
            self.fail(line, f"constraint {_show(a)} bounds no input")
        return out

    @staticmethod
    def conjuncts(e) -> list:
        """Flatten nested (and ...) into a list of formulas (iteratively)."""
        out, stack = [], [e]
        while stack:
            f = stack.pop()
            if isinstance(f, list) and f and f[0] == "and":
                stack.extend(reversed(f[1:]))
            else:
                out.append(f)
        return out

    def assertion(self, body, line: int):
        for c in self.conjuncts(body):
            cline = c.line if isinstance(c, list) else line
            xs, ys = self.variables(c, cline)
            if not xs:
                if not ys:
                    self.fail(cline, f"assertion {_show(c)} mentions no variable")
                self.output_constraints.append(OutputConstraint(_to_tuple(c), cline))
                continue
            head = c[0] if isinstance(c, list) and c else None
            if head == "or":
                self.disjunction(c)
                continue
            if ys:
                self.fail(cline, f"constraint mixes inputs and outputs; only box constraints on "
                                 f"inputs are supported: {_show(c)}")
            for idx, kind, val, txt, ln in self.box_atom(c, cline):
                self.tighten(self.lower if kind == "lo" else self.upper, kind, idx, val, txt, ln)

    def disjunction(self, c: SExpr):
        alternatives = []
        keeps_outputs = False
        for d in c[1:]:
            bounds = []
            for a in self.conjuncts(d):
                aline = a.line if isinstance(a, list) else c.line
                xs, ys = self.variables(a, aline)
                if not xs:
                    keeps_outputs = keeps_outputs or bool(ys)
                    continue
                if isinstance(a, list) and a and a[0] in ("or", "not", "=>", "ite", "xor"):
                    self.fail(aline, f"only box constraints on inputs and a top-level disjunction of "
                                     f"boxes are supported; got {a[0]!r} inside (or ...): {_show(a)}")
                if ys:
                    self.fail(aline, f"constraint mixes inputs and outputs; only box constraints on "
                                     f"inputs are supported: {_show(a)}")
                bounds += self.box_atom(a, aline)
            alternatives.append(bounds)
        if keeps_outputs:
            self.output_constraints.append(OutputConstraint(_to_tuple(c), c.line))
        if not alternatives:
            self.fail(c.line, "empty (or)")
        self.disjunctions.append((c.line, alternatives))

    @staticmethod
    def tighten(table, kind, idx, val, txt, line):
        old = table.get(idx)
        if old is None or (val > old[0] if kind == "lo" else val < old[0]):
            table[idx] = (val, txt, line)

    # -- result -----------------------------------------------------------
    def result(self) -> VnnlibProperty:
        src = self.source
        n = len(self.inputs)
        if n == 0:
            self.fail(None, "declares no input variables (X_0 ...)")
        for table, name in ((self.inputs, "X"), (self.outputs, "Y")):
            if table and max(table) != len(table) - 1:
                # indices are distinct: some index below len(table) is missing (never
                # build range(max): X_99999999999 alone must not take forever)
                first = next(i for i in range(len(table) + 1) if i not in table)
                self.fail(None, f"variables must be numbered {name}_0..{name}_{max(table)} without "
                                f"gaps, but {name}_{first} is not declared")
        combos = 1
        for _, alts in self.disjunctions:
            combos *= len(alts)
            if combos > MAX_BOXES:
                self.fail(self.disjunctions[0][0], f"the disjunctions describe more than {MAX_BOXES} "
                                                   f"boxes; refused")
        if combos * n > MAX_BOX_VALUES:
            self.fail(self.disjunctions[0][0] if self.disjunctions else None,
                      f"{combos} boxes of {n} inputs need {combos * n} bounds, more than the limit "
                      f"of {MAX_BOX_VALUES} (MAX_BOX_VALUES); refused")
        boxes, exact = [], []
        cache: dict = {}

        def rounded(q: Fraction, down: bool) -> float:
            # many boxes share their bounds: round each rational once per direction
            key = (q, down)
            if key not in cache:
                cache[key] = _round(q, down=down)
            return cache[key]

        # The bounds outside every (or) are shared by all boxes: validate and round them
        # once; each box then only applies its disjuncts' bounds (linear in the output).
        base_lo, base_hi = self.lower, self.upper
        missing_lo = [i for i in range(n) if i not in base_lo]
        missing_hi = [i for i in range(n) if i not in base_hi]
        base_bad = [i for i in range(n)
                    if i in base_lo and i in base_hi and base_lo[i][0] > base_hi[i][0]]
        nan = math.nan
        flo_base = np.array([rounded(base_lo[i][0], True) if i in base_lo else nan
                             for i in range(n)])
        fhi_base = np.array([rounded(base_hi[i][0], False) if i in base_hi else nan
                             for i in range(n)])
        qlo_base = [base_lo[i][0] if i in base_lo else None for i in range(n)]
        qhi_base = [base_hi[i][0] if i in base_hi else None for i in range(n)]

        choices = list(itertools.product(*[range(len(alts)) for _, alts in self.disjunctions]))
        for number, choice in enumerate(choices):
            mod_lo: dict = {}
            mod_hi: dict = {}
            where = []
            for (dline, alts), k in zip(self.disjunctions, choice):
                for idx, kind, val, txt, ln in alts[k]:
                    table, base = (mod_lo, base_lo) if kind == "lo" else (mod_hi, base_hi)
                    if idx not in table and idx in base:
                        table[idx] = base[idx]
                    self.tighten(table, kind, idx, val, txt, ln)
                where.append(f"disjunct {k + 1} of the (or) on line {dline}")
            ctx = f" in {', '.join(where)}" if where else ""

            def get(i, mod, base):
                return mod[i] if i in mod else base.get(i)

            # the first input with a problem, checked in the order: no lower bound,
            # no upper bound, lower > upper (tightening never repairs a base conflict)
            cand = [next((i for i in missing_lo if i not in mod_lo), None),
                    next((i for i in missing_hi if i not in mod_hi), None),
                    base_bad[0] if base_bad else None]
            for i in set(mod_lo) | set(mod_hi):
                lo, hi = get(i, mod_lo, base_lo), get(i, mod_hi, base_hi)
                if lo is not None and hi is not None and lo[0] > hi[0]:
                    cand.append(i)
            cand = [i for i in cand if i is not None]
            if cand:
                i = min(cand)
                lo, hi = get(i, mod_lo, base_lo), get(i, mod_hi, base_hi)
                if lo is None:
                    self.fail(None, f"input X_{i} has no lower bound{ctx}")
                if hi is None:
                    self.fail(None, f"input X_{i} has no upper bound{ctx}")
                self.fail(lo[2], f"input X_{i} has lower bound {lo[1]} (line {lo[2]}) > "
                                 f"upper bound {hi[1]} (line {hi[2]}){ctx}")
            flo, fhi = flo_base.copy(), fhi_base.copy()
            qlo, qhi = list(qlo_base), list(qhi_base)
            for i, (val, _, _) in mod_lo.items():
                flo[i], qlo[i] = rounded(val, True), val
            for i, (val, _, _) in mod_hi.items():
                fhi[i], qhi[i] = rounded(val, False), val
            label = src if len(choices) == 1 else f"{src} box {number + 1}"
            boxes.append(Box(flo, fhi, source=label))
            exact.append((qlo, qhi))
        return VnnlibProperty(path=src, n_inputs=n, n_outputs=len(self.outputs), boxes=boxes,
                              exact_boxes=exact, output_constraints=self.output_constraints)


def _round(q: Fraction, *, down: bool) -> float:
    """The float nearest ``q`` on the safe side (<= q if ``down``, else >= q)."""
    f = float(q)
    if not math.isfinite(f):
        raise DomainError(f"bound {q} is not finite in float64")
    exact = Fraction(f)
    if down and exact > q:
        f = math.nextafter(f, -math.inf)
    elif not down and exact < q:
        f = math.nextafter(f, math.inf)
    return f


def parse_vnnlib(text: str, *, source: str = "<vnnlib>") -> VnnlibProperty:
    """Parse VNNLIB text (``source`` names it in error messages)."""
    if len(text) > MAX_BYTES:
        raise DomainError(f"{source}: vnnlib text over {_limit()} is refused")
    p = _Parser(source)
    for e in _top_level(text, source):
        p.command(e)
    return p.result()
