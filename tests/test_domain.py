"""Input domains: Box validation, box:LO,HI, JSON domains and VNNLIB properties."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from leo_verify.domain import Box, load_domains, parse_domain
from leo_verify.errors import DomainError, InputFileError
from leo_verify.io import vnnlib
from leo_verify.io.vnnlib import parse_vnnlib, read_vnnlib

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "benchmarks"
BROKEN = ROOT / "tests" / "data" / "broken"

needs_bench = pytest.mark.skipif(not (BENCH / "acasxu" / "prop_1.vnnlib").exists(),
                                 reason="shared benchmarks not available")


# -- Box ------------------------------------------------------------------------

def test_box_basic():
    b = Box([0, -1], [1, 2], source="t")
    assert b.size == 2
    assert b.lower.dtype == np.float64 and not b.lower.flags.writeable
    assert list(b.contains([[0.5, 0], [2, 0]])) == [True, False]
    assert b.exact_bounds() == ([Fraction(0), Fraction(-1)], [Fraction(1), Fraction(2)])
    assert Box.from_json(b.to_json()).to_json() == b.to_json()


def test_box_lower_above_upper_names_index_and_values():
    with pytest.raises(DomainError, match=r"input 1 has lower 2\.5 > upper 1\.0") as info:
        Box([0, 2.5, 0], [1, 1, 1], source="mine")
    assert "mine" in str(info.value) and info.value.exit_code == 8


@pytest.mark.parametrize("lo,hi,idx", [
    ([0, float("nan")], [1, 1], 1),
    ([0, 0], [float("inf"), 1], 0),
    ([-float("inf"), 0], [1, 1], 0),
])
def test_box_non_finite(lo, hi, idx):
    with pytest.raises(DomainError, match=rf"input {idx} has non-finite bounds"):
        Box(lo, hi)


def test_box_wrong_lengths_and_types():
    with pytest.raises(DomainError, match="2 lower bounds but 3 upper bounds"):
        Box([0, 0], [1, 1, 1])
    with pytest.raises(DomainError, match="no bounds"):
        Box([], [])
    with pytest.raises(DomainError, match="must be numbers"):
        Box(["a", "b"], [1, 1])
    with pytest.raises(DomainError, match="has 2 inputs but the network has 3"):
        Box([0, 0], [1, 1], source="d").check_size(3)


# -- box:LO,HI --------------------------------------------------------------------

def test_box_spec():
    (b,) = load_domains("box:-1,1", n=3)
    assert list(b.lower) == [-1, -1, -1] and list(b.upper) == [1, 1, 1]
    b = parse_domain("box:0,1e-3", n=2)
    assert list(b.upper) == [1e-3, 1e-3]


@pytest.mark.parametrize("spec,match", [
    ("box:1", "expected box:LO,HI"),
    ("box:1,2,3", "expected box:LO,HI"),
    ("box:a,b", "must be numbers"),
    ("box:2,1", r"input 0 has lower 2\.0 > upper 1\.0"),
    ("box:nan,1", "non-finite"),
    ("box:0,1e999", "non-finite"),
    ("ball:0,1", "expected box:LO,HI, a .json or a .vnnlib"),
])
def test_box_spec_errors(spec, match):
    with pytest.raises(DomainError, match=match):
        load_domains(spec, n=2)


def test_box_spec_needs_n():
    with pytest.raises(DomainError, match="number of inputs"):
        load_domains("box:0,1")


# -- JSON domains -----------------------------------------------------------------

def _json(tmp_path, content, name="d.json"):
    f = tmp_path / name
    f.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(f)


def test_json_domain(tmp_path):
    f = _json(tmp_path, {"lower": [0, -1.5], "upper": [1, 2]})
    b = parse_domain(f, n=2)
    assert list(b.lower) == [0, -1.5] and list(b.upper) == [1, 2] and b.source == f


@pytest.mark.parametrize("content,match", [
    ([0, 1], "expected an object with 'lower' and 'upper'"),
    ({"lower": [0]}, "expected an object with 'lower' and 'upper'"),
    ({"lower": "0", "upper": [1]}, "'lower' must be a list of numbers, got str"),
    ({"lower": [0], "upper": {"a": 1}}, "'upper' must be a list of numbers, got dict"),
    ({"lower": [0, "x"], "upper": [1, 1]}, r"lower\[1\] = 'x' is not a number"),
    ({"lower": [0, True], "upper": [1, 1]}, r"lower\[1\] = True is not a number"),
    ({"lower": [0, None], "upper": [1, 1]}, r"lower\[1\] = None is not a number"),
    ({"lower": [[0], [0]], "upper": [1, 1]}, r"lower\[0\] = \[0\] is not a number"),
    ({"lower": [0, 10 ** 400], "upper": [1, 1]}, r"lower\[1\] = .* is not finite"),
    ({"lower": [0, 3], "upper": [1, 2]}, r"input 1 has lower 3\.0 > upper 2\.0"),
    ({"lower": [0], "upper": [1, 1]}, "1 lower bounds but 2 upper bounds"),
    ('{"lower": [NaN, 0], "upper": [1, 1]}', "input 0 has non-finite bounds"),
    ('{"lower": [0, 0], "upper": [1, Infinity]}', "input 1 has non-finite bounds"),
    ('{"lower": [0, 0', "not valid JSON"),
    ("[" * 100000, "nested too deeply"),
])
def test_json_domain_errors(tmp_path, content, match):
    f = _json(tmp_path, content)
    with pytest.raises(DomainError, match=match) as info:
        load_domains(f)
    assert "d.json" in str(info.value)


def test_json_domain_wrong_size_for_network(tmp_path):
    f = _json(tmp_path, {"lower": [0, 0], "upper": [1, 1]})
    with pytest.raises(DomainError, match="has 2 inputs but the network has 5"):
        parse_domain(f, n=5)


def test_broken_folder_domains():
    with pytest.raises(DomainError, match=r"lower\[2\] = 'zero' is not a number"):
        load_domains(str(BROKEN / "bad_domain_types.json"))
    with pytest.raises(DomainError, match=r"bad_bounds.vnnlib:\d+: input X_2 has lower bound 0.75 "
                                          r"\(line \d+\) > upper bound 0.25"):
        load_domains(str(BROKEN / "bad_bounds.vnnlib"))


def test_missing_domain_files(tmp_path):
    for name in ("missing.json", "missing.vnnlib"):
        with pytest.raises(InputFileError, match="does not exist"):
            load_domains(str(tmp_path / name))
    with pytest.raises(DomainError, match="cannot interpret"):
        load_domains(42)


def test_api_pairs():
    (b,) = load_domains(([0, 0], [1, 1]), n=2)
    assert b.size == 2
    assert load_domains(b) == [b]


# -- VNNLIB: the shared benchmark files ---------------------------------------------

ACAS_BOXES = {
    1: (["0.6", "-0.5", "-0.5", "0.45", "-0.5"], ["0.679857769", "0.5", "0.5", "0.5", "-0.45"]),
    2: (["0.6", "-0.5", "-0.5", "0.45", "-0.5"], ["0.679857769", "0.5", "0.5", "0.5", "-0.45"]),
    3: (["-0.303531156", "-0.009549297", "0.493380324", "0.3", "0.3"],
        ["-0.298552812", "0.009549297", "0.5", "0.5", "0.5"]),
    4: (["-0.303531156", "-0.009549297", "0.0", "0.318181818", "0.083333333"],
        ["-0.298552812", "0.009549297", "0.0", "0.5", "0.166666667"]),
}


@needs_bench
@pytest.mark.parametrize("prop", [1, 2, 3, 4])
def test_vnnlib_acas(prop):
    p = read_vnnlib(BENCH / "acasxu" / f"prop_{prop}.vnnlib")
    assert p.n_inputs == 5 and p.n_outputs == 5 and len(p.boxes) == 1
    lo_txt, hi_txt = ACAS_BOXES[prop]
    lo_q = [Fraction(t) for t in lo_txt]
    hi_q = [Fraction(t) for t in hi_txt]
    # the exact bounds are the decimals of the file
    assert p.exact_boxes == [(lo_q, hi_q)]
    b = p.box
    # the float box is the decimal box rounded outwards by at most one ulp
    assert np.allclose(b.lower, [float(q) for q in lo_q], rtol=0, atol=1e-15)
    assert np.allclose(b.upper, [float(q) for q in hi_q], rtol=0, atol=1e-15)
    for i in range(5):
        # lower = the largest float <= the decimal, upper = the smallest float >= it
        assert Fraction(b.lower[i]) <= lo_q[i] < Fraction(np.nextafter(b.lower[i], np.inf))
        assert Fraction(np.nextafter(b.upper[i], -np.inf)) < hi_q[i] <= Fraction(b.upper[i])
    # the output conditions are kept, they do not restrict the inputs
    assert p.output_constraints
    if prop == 1:
        (c,) = p.output_constraints
        assert c.expr == (">=", "Y_0", "3.991125645861615")
    else:
        assert len(p.output_constraints) == 4
    # the domain API reads the same file
    assert parse_domain(str(BENCH / "acasxu" / f"prop_{prop}.vnnlib"), n=5).to_json()["lower"] == \
        [float(v) for v in b.lower]


@needs_bench
def test_vnnlib_acas_prop1_box():
    b = parse_domain(str(BENCH / "acasxu" / "prop_1.vnnlib"), n=5)
    # X_0 in [0.6, 0.679857769], ..., each rounded outwards to float64 (<= 1 ulp)
    assert b.lower.tolist() == pytest.approx([0.6, -0.5, -0.5, 0.45, -0.5], abs=1e-15)
    assert b.upper.tolist() == pytest.approx([0.679857769, 0.5, 0.5, 0.5, -0.45], abs=1e-15)
    assert b.lower[0] == 0.6  # float(0.6) is below 0.6 already
    assert b.lower[3] == np.nextafter(0.45, -1)  # float(0.45) is above 0.45: one ulp down
    assert b.upper[1:4].tolist() == [0.5, 0.5, 0.5]  # exact decimals are kept


@needs_bench
@pytest.mark.parametrize("name,eps", [("prop_0_0.03.vnnlib", 0.03), ("prop_1_0.05.vnnlib", 0.05)])
def test_vnnlib_mnist(name, eps):
    p = read_vnnlib(BENCH / "mnistfc" / name)
    assert p.n_inputs == 784 and p.n_outputs == 10
    b = p.box
    assert b.size == 784
    assert b.lower.min() >= 0 and b.upper.max() <= 1
    assert np.all(b.upper - b.lower <= 2 * eps + 1e-6)
    # the output condition is one disjunction over Y only
    (c,) = p.output_constraints
    assert c.expr[0] == "or" and len(c.expr) == 10


# -- VNNLIB: constructs and hostile files ----------------------------------------------

HEAD = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"


def test_vnnlib_forms():
    text = HEAD + """
    ; comments are ignored (even with ( parentheses
    (assert (<= 0.5 X_0))          ; reversed lower bound
    (assert (>= 1.5e0 X_0))        ; reversed upper bound
    (assert (and (>= X_1 (- 2)) (<= X_1 -1E-1)))
    (assert (<= Y_0 (- 1)))
    (check-sat)
    """
    p = parse_vnnlib(text, source="forms.vnnlib")
    assert p.exact_boxes == [([Fraction(1, 2), Fraction(-2)], [Fraction(3, 2), Fraction(-1, 10)])]
    assert list(p.box.lower) == [0.5, -2.0]
    assert p.box.upper[1] >= -0.1 and p.box.upper[1] == pytest.approx(-0.1)
    assert [c.expr for c in p.output_constraints] == [("<=", "Y_0", ("-", "1"))]


def test_vnnlib_tightest_bound_wins_and_equality():
    p = parse_vnnlib(HEAD + "(assert (<= X_0 1))(assert (<= X_0 0.5))(assert (>= X_0 0))"
                            "(assert (>= X_0 -1))(assert (= X_1 0.25))")
    assert list(p.box.lower) == [0, 0.25] and list(p.box.upper) == [0.5, 0.25]


def test_vnnlib_disjunction_gives_boxes(tmp_path):
    text = HEAD + """
    (assert (<= X_1 1))
    (assert (>= X_1 0))
    (assert (or (and (>= X_0 0) (<= X_0 1))
                (and (>= X_0 2) (<= X_0 3) (<= X_1 0.5))))
    """
    f = tmp_path / "disj.vnnlib"
    f.write_text(text)
    p = read_vnnlib(f)
    assert len(p.boxes) == 2
    assert list(p.boxes[0].lower) == [0, 0] and list(p.boxes[0].upper) == [1, 1]
    assert list(p.boxes[1].lower) == [2, 0] and list(p.boxes[1].upper) == [3, 0.5]
    via_api = load_domains(str(f), n=2)
    assert [(b.lower.tolist(), b.upper.tolist()) for b in via_api] == \
        [(b.lower.tolist(), b.upper.tolist()) for b in p.boxes]
    with pytest.raises(DomainError, match="disjunction of 2 boxes is not supported"):
        parse_domain(str(f), n=2)
    with pytest.raises(DomainError, match="disjunction of 2 boxes"):
        p.box


def test_vnnlib_disjunction_with_output_parts():
    text = HEAD + "(assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (>= Y_0 3))" \
                  "            (and (>= X_0 1) (<= X_0 2) (>= X_1 0) (<= X_1 1))))"
    p = parse_vnnlib(text)
    assert len(p.boxes) == 2 and len(p.output_constraints) == 1
    assert p.output_constraints[0].expr[0] == "or"


def _err(text, source="bad.vnnlib"):
    with pytest.raises(DomainError) as info:
        parse_vnnlib(text, source=source)
    msg = str(info.value)
    assert msg.startswith(source) and "\n" not in msg
    return msg


@pytest.mark.parametrize("text,match", [
    (HEAD + "(assert (<= X_0 1)", r":4: syntax error: unbalanced '\('"),
    (HEAD + "(assert (<= X_0 1)))", r":4: syntax error: unbalanced '\)'"),
    (HEAD + "X_0", "outside parentheses"),
    (HEAD + '(set-info :x "never closed)', "unterminated string"),
    (HEAD + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (>= X_1 0))", "input X_1 has no upper bound"),
    (HEAD + "(assert (<= X_1 1))\n(assert (>= X_1 0))\n(assert (<= X_0 1))", "input X_0 has no lower bound"),
    (HEAD + "(assert (<= (+ X_0 X_1) 1))", "only box constraints on inputs are supported"),
    (HEAD + "(assert (<= X_0 X_1))", "only box constraints on inputs are supported"),
    (HEAD + "(assert (<= (* 2 X_0) 1))", "only box constraints on inputs are supported"),
    (HEAD + "(assert (not (<= X_0 1)))", "only box constraints on inputs are supported"),
    (HEAD + "(assert (<= X_0 Y_0))", "mixes inputs and outputs"),
    (HEAD + "(assert (or (and (or (<= X_0 1) (<= X_0 2)))))", "top-level disjunction"),
    (HEAD + "(assert (<= X_7 1))", "undeclared variable X_7"),
    (HEAD + "(assert (<= Y_3 1))", "undeclared variable Y_3"),
    (HEAD + "(assert (<= X_0 z))", "unknown symbol 'z'"),
    (HEAD + "(assert (<= X_0 NaN))", "'NaN' is not a finite number"),
    (HEAD + "(assert (<= X_0 inf))", "'inf' is not a finite number"),
    (HEAD + "(assert (>= X_0 -Infinity))", "not a finite number"),
    (HEAD + "(assert (<= X_0 1e400))", "not finite in float64"),
    (HEAD + "(assert (<= X_0 (* 1e300 1e300)))", "not finite in float64"),
    (HEAD + "(assert (<= X_0 (/ 1 0)))", "division by zero"),
    (HEAD + "(declare-const X_0 Real)", "declared twice"),
    ("(declare-const X_1 Real)", "X_0 is not declared"),
    ("(declare-const X_0 Int)", "only Real"),
    ("(declare-const in0 Real)", "unsupported variable name"),
    ("(declare-const Y_0 Real)(assert (<= Y_0 1))", "declares no input variables"),
    ("", "declares no input variables"),
    (HEAD + "(define-fun f () Real 1.0)", "unsupported command 'define-fun'"),
])
def test_vnnlib_hostile(text, match):
    msg = _err(text)
    assert __import__("re").search(match, msg), msg


def test_vnnlib_lower_above_upper_names_index_values_and_lines():
    msg = _err(HEAD + "(assert (<= X_1 1))\n(assert (>= X_1 0))\n"
                      "(assert (>= X_0 0.75))\n(assert (<= X_0 0.25))")
    assert msg == ("bad.vnnlib:6: input X_0 has lower bound 0.75 (line 6) > "
                   "upper bound 0.25 (line 7)")


def test_vnnlib_deep_nesting_is_refused_without_recursion_error():
    deep = HEAD + "(assert " + "(" * 5000 + ")" * 5000 + ")"
    assert "nesting deeper than 1000" in _err(deep)
    # just under the limit: parsed iteratively, no RecursionError
    ok = HEAD + "(assert (and " + "(and " * 990 + "(<= X_0 1)" + ")" * 990 + "))" \
        + "(assert (>= X_0 0))(assert (<= X_1 1))(assert (>= X_1 0))"
    assert list(parse_vnnlib(ok).box.upper) == [1, 1]


def test_vnnlib_size_limit(tmp_path, monkeypatch):
    f = tmp_path / "big.vnnlib"
    f.write_text(HEAD + "; " + "x" * 2000 + "\n")
    monkeypatch.setattr(vnnlib, "MAX_BYTES", 1000)
    with pytest.raises(DomainError, match="big.vnnlib: file is 2[0-9]+ bytes; vnnlib files over "
                                          "1000 bytes are refused"):
        read_vnnlib(f)


def test_vnnlib_missing_and_not_utf8(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        read_vnnlib(tmp_path / "nope.vnnlib")
    with pytest.raises(InputFileError, match="not a file"):
        read_vnnlib(tmp_path)
    f = tmp_path / "latin.vnnlib"
    f.write_bytes(HEAD.encode() + b"; caf\xe9\n")
    with pytest.raises(DomainError, match=r"latin.vnnlib:4: not UTF-8"):
        read_vnnlib(f)


def test_vnnlib_strict_bounds_are_closed():
    p = parse_vnnlib(HEAD + "(assert (< X_0 1))(assert (> X_0 0))(assert (<= -1 X_1 1))")
    assert list(p.box.lower) == [0, -1] and list(p.box.upper) == [1, 1]
