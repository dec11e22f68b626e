"""The command line: subcommands, outputs, and one-line errors with documented exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from leo_verify import __version__
from leo_verify import cli
from leo_verify.errors import EXIT_CODES, DomainError

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "data" / "broken"
EXAMPLES = ROOT / "examples" / "nets"
BENCH = ROOT.parent / "shared" / "benchmarks"
ACAS_1_1 = BENCH / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx"

needs_bench = pytest.mark.skipif(not ACAS_1_1.exists(), reason="shared benchmarks not available")


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(code, err, expected, *mentions):
    """Exit code as documented, exactly one stderr line, no traceback, names what is wrong."""
    assert expected in EXIT_CODES
    assert code == expected, (code, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("leo-verify: error:"), err
    for m in mentions:
        assert m in lines[0], (m, lines[0])


# -- broken inputs ------------------------------------------------------------

# (file, expected exit code, words the message must contain)
BROKEN_MODELS = [
    ("truncated.onnx", 5, ["truncated.onnx"]),
    ("empty.onnx", 5, ["empty.onnx"]),
    ("unsupported_op.onnx", 6, ["unsupported_op.onnx", "Sigmoid", "relu1"]),
    # W1 of `y = W x` has NaN at row 1, column 2 (the ONNX MatMul weight is its transpose)
    ("nan_weight.onnx", 7, ["nan", "fc1", "[1, 2]"]),
    # an inconsistent ONNX file (MatMul inner dimensions 4 vs 5): the ONNX loader
    # reports it as a malformed model (5), naming the node; a shape mismatch
    # inside a graph built through the API is a GraphError (7)
    ("shape_mismatch.onnx", 5, ["shape_mismatch.onnx", "fc1_matmul"]),
]


@pytest.mark.parametrize("name,expected,mentions", BROKEN_MODELS, ids=[b[0] for b in BROKEN_MODELS])
@pytest.mark.parametrize("command", ["info", "eval"])
def test_broken_model(capsys, command, name, expected, mentions):
    argv = [command, BROKEN / name]
    if command == "eval":
        argv += ["--input", BROKEN / "point.json"]
    code, out, err = run(capsys, *argv)
    assert_error(code, err, expected, *mentions)
    assert out == ""


@pytest.mark.parametrize("command", ["info", "eval"])
def test_missing_model(capsys, tmp_path, command):
    missing = tmp_path / "no_such_model.onnx"
    argv = [command, missing] + (["--input", BROKEN / "point.json"] if command == "eval" else [])
    code, out, err = run(capsys, *argv)
    assert_error(code, err, 4, "no_such_model.onnx", "does not exist")


def test_model_path_is_folder(capsys, tmp_path):
    folder = tmp_path / "dir.onnx"
    folder.mkdir()
    code, _, err = run(capsys, "info", folder)
    assert_error(code, err, 4, "dir.onnx")


def test_unknown_model_format(capsys, tmp_path):
    f = tmp_path / "model.h5"
    f.write_bytes(b"\x89HDF")
    code, _, err = run(capsys, "info", f)
    assert_error(code, err, 5, "model.h5")


def test_eval_point_wrong_length(capsys):
    code, out, err = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input",
                         BROKEN / "bad_point_length.json")
    assert_error(code, err, 9, "bad_point_length.json", "3 values", "4 inputs")
    assert out == ""


def test_eval_missing_input(capsys, tmp_path):
    code, _, err = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", tmp_path / "nope.json")
    assert_error(code, err, 4, "nope.json")


@pytest.mark.parametrize("content,mentions", [
    ('{"lower": [0, 0, 0, 0]}', ["got dict"]),
    ("[]", ["non-empty"]),
    ("[[0, 0, 0, 0], [0, 0, 0]]", ["point 1 has 3 values"]),
    ('[0, 0, "a", 0]', ["value [2]", "'a'"]),
    ("[0, 0, true, 0]", ["value [2]", "True"]),
    ("[[0, 0, 0, 0], 5]", ["point 1"]),
    ("[0, 0, NaN, 0]", ["value [2]", "not finite"]),
    ("[0, 0, 1e999, 0]", ["value [2]", "not finite"]),
    ("[0, 0, " + "9" * 400 + ", 0]", ["value [2]", "too large"]),
    ("[0, 0,", ["not valid JSON"]),
    ("[" * 100000, ["nested too deeply"]),
])
def test_eval_bad_json_points(capsys, tmp_path, content, mentions):
    f = tmp_path / "pts.json"
    f.write_text(content)
    code, _, err = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", f)
    assert_error(code, err, 9, "pts.json", *mentions)


@pytest.mark.parametrize("array,mentions", [
    (np.zeros((2, 3)), ["(2, 3)", "4 inputs"]),
    (np.zeros((2, 4, 1)), ["(2, 4, 1)"]),
    (np.array([0.0, np.inf, 0, 0]), ["value [1]", "not finite"]),
    (np.array([[0, 0, 0, 0], [0, 0, np.nan, 0]]), ["point 1 value [2]", "not finite"]),
    (np.array(["a", "b", "c", "d"]), ["dtype"]),
    (np.zeros(4, dtype=complex), ["dtype"]),
])
def test_eval_bad_npy_points(capsys, tmp_path, array, mentions):
    f = tmp_path / "pts.npy"
    np.save(f, array)
    code, _, err = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", f)
    assert_error(code, err, 9, "pts.npy", *mentions)


def test_eval_npy_refuses_pickles_and_garbage(capsys, tmp_path):
    f = tmp_path / "obj.npy"
    np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", f)
    assert_error(code, err, 9, "obj.npy")
    g = tmp_path / "garbage.npy"
    g.write_bytes(b"\x93NUMPY garbage")
    code, _, err = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", g)
    assert_error(code, err, 9, "garbage.npy")


def test_eval_input_suffix_is_usage_error(capsys):
    code, _, err = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", BROKEN / "bad_bounds.vnnlib")
    assert_error(code, err, 3, "bad_bounds.vnnlib")


def test_eval_output_refuses_to_overwrite_input(capsys, tmp_path):
    pts = tmp_path / "p.json"
    pts.write_text("[0, 0, 0, 0]")
    code, _, err = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", pts, "-o", pts)
    assert_error(code, err, 10, "p.json", "overwrite")
    assert pts.read_text() == "[0, 0, 0, 0]"


def test_eval_output_folder_missing(capsys, tmp_path):
    code, _, err = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", BROKEN / "point.json",
                       "-o", tmp_path / "nope" / "out.json")
    assert_error(code, err, 4, "nope")


def test_eval_output_bad_suffix_and_exact_npy(capsys, tmp_path):
    base = ["eval", BROKEN / "valid_mlp.onnx", "--input", BROKEN / "point.json"]
    code, _, err = run(capsys, *base, "-o", tmp_path / "out.txt")
    assert_error(code, err, 3, "out.txt")
    code, _, err = run(capsys, *base, "--exact", "-o", tmp_path / "out.npy")
    assert_error(code, err, 3, "--exact")


# Domains: no subcommand takes --domain yet (analyze/compress will); check the
# files through the loader, and through main() with a throw-away command.
@pytest.mark.parametrize("name,mentions", [
    ("bad_bounds.vnnlib", ["bad_bounds.vnnlib", "X_2", "0.75", "0.25"]),
    ("bad_domain_types.json", ["bad_domain_types.json", "lower[2]", "'zero'"]),
])
def test_broken_domain(capsys, monkeypatch, name, mentions):
    from leo_verify.domain import load_domains
    with pytest.raises(DomainError) as info:
        load_domains(str(BROKEN / name), n=4)
    assert info.value.exit_code == 8

    def add(p):
        p.add_argument("--domain", required=True)

    def run_probe(args):
        load_domains(args.domain, n=4)
        return 0

    monkeypatch.setitem(cli.COMMANDS, "domain-probe",
                        cli.Command("domain-probe", "test only", add, run_probe))
    code, _, err = run(capsys, "domain-probe", "--domain", BROKEN / name)
    assert_error(code, err, 8, *mentions)


def test_missing_domain_file(capsys, tmp_path):
    from leo_verify.domain import load_domains
    from leo_verify.errors import InputFileError
    for suffix in (".json", ".vnnlib"):
        with pytest.raises(InputFileError, match="does not exist"):
            load_domains(str(tmp_path / f"missing{suffix}"))


# -- usage errors, bugs, interrupts ----------------------------------------------

@pytest.mark.parametrize("argv,mentions", [
    ([], ["required"]),
    (["frobnicate"], ["frobnicate"]),
    (["info"], ["model"]),
    (["info", "x.onnx", "--bogus"], ["--bogus"]),
    (["eval", "x.onnx"], ["--input"]),
])
def test_usage_errors_exit_3(capsys, argv, mentions):
    code, out, err = run(capsys, *argv)
    assert_error(code, err, 3, *mentions)


def test_version_and_help(capsys):
    code, out, err = run(capsys, "--version")
    assert code == 0 and out.strip() == f"leo-verify {__version__}"
    code, out, err = run(capsys, "--help")
    assert code == 0 and "info" in out and "eval" in out
    code, out, err = run(capsys, "eval", "--help")
    assert code == 0 and "--exact" in out


def test_internal_error_is_a_bug_with_traceback(capsys, monkeypatch):
    def boom(args):
        raise RuntimeError("kaboom")

    monkeypatch.setitem(cli.COMMANDS, "boom", cli.Command("boom", "test only", lambda p: None, boom))
    code, _, err = run(capsys, "boom")
    assert code == 70
    assert "Traceback" in err and "kaboom" in err and "bug" in err.splitlines()[-1]


def test_keyboard_interrupt_exits_130(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "slow", cli.Command("slow", "test only", lambda p: None,
                                                         interrupted))
    code, _, err = run(capsys, "slow")
    assert code == 130
    assert len(err.splitlines()) == 1 and "interrupted" in err and "Traceback" not in err


def test_missing_loader_module_is_not_swallowed(capsys, monkeypatch):
    # an ImportError inside a loader is a bug (exit 70 with traceback), not a user error
    import leo_verify.io as io_pkg

    def broken_load(path, **kw):
        raise ImportError("No module named 'leo_verify.io.onnx'")

    monkeypatch.setattr(io_pkg, "load", broken_load)
    code, _, err = run(capsys, "info", BROKEN / "valid_mlp.onnx")
    assert code == 70 and "Traceback" in err and "ImportError" in err


def test_commands_registry_is_the_extension_point():
    assert list(cli.COMMANDS)[:2] == ["info", "eval"]
    for cmd in cli.COMMANDS.values():
        assert callable(cmd.add_arguments) and callable(cmd.run) and cmd.help


# -- subprocess: the real entry points print no traceback ------------------------

def _subprocess(*argv, module=True):
    cmd = [sys.executable, "-m", "leo_verify", *map(str, argv)]
    env = {k: v for k, v in os.environ.items() if k != "LEO_VERIFY_DEBUG"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


@pytest.mark.parametrize("argv,expected,mentions", [
    (["info", BROKEN / "truncated.onnx"], 5, ["truncated.onnx"]),
    (["info", BROKEN / "unsupported_op.onnx"], 6, ["Sigmoid"]),
    (["info", BROKEN / "nan_weight.onnx"], 7, ["nan"]),
    (["info", BROKEN / "does_not_exist.onnx"], 4, ["does_not_exist.onnx"]),
    (["eval", BROKEN / "valid_mlp.onnx", "--input", BROKEN / "bad_point_length.json"], 9,
     ["bad_point_length.json"]),
    (["eval", BROKEN / "valid_mlp.onnx"], 3, ["--input"]),
])
def test_subprocess_errors(argv, expected, mentions):
    proc = _subprocess(*argv)
    assert_error(proc.returncode, proc.stderr, expected, *mentions)
    assert proc.stdout == ""


def test_subprocess_console_script():
    exe = Path(sys.executable).with_name("leo-verify")
    if not exe.exists():
        pytest.skip("console script not installed")
    proc = subprocess.run([str(exe), "info", str(BROKEN / "empty.onnx")], capture_output=True,
                          text=True, timeout=120)
    assert_error(proc.returncode, proc.stderr, 5, "empty.onnx")


# -- working commands ---------------------------------------------------------

@needs_bench
def test_info_acas(capsys):
    code, out, err = run(capsys, "info", ACAS_1_1)
    assert code == 0 and err == ""
    assert "inputs      5" in out and "outputs     5" in out
    assert "6 ReLU layer(s)" in out and out.count("  50\n") == 6
    assert "neurons     300" in out and "opset 8" in out
    code, out, _ = run(capsys, "info", ACAS_1_1, "--json")
    facts = json.loads(out)
    assert facts["inputs"] == 5 and facts["outputs"] == 5
    assert [l["width"] for l in facts["hidden_layers"]] == [50] * 6
    assert facts["neurons"] == 300 and facts["parameters"] == 5 * 50 + 5 * 50 * 50 + 50 * 5 + 6 * 50 + 5
    assert len(facts["sha256"]) == 64 and facts["format"] == "onnx" and facts["opset"] == 8


def test_info_json_small(capsys):
    import hashlib
    code, out, _ = run(capsys, "info", BROKEN / "valid_mlp.onnx", "--json")
    facts = json.loads(out)
    assert code == 0
    assert facts["sha256"] == hashlib.sha256((BROKEN / "valid_mlp.onnx").read_bytes()).hexdigest()
    assert facts["inputs"] == 4 and facts["outputs"] == 2
    assert facts["hidden_layers"] == [{"name": "relu1", "width": 8}]
    assert facts["parameters"] == 4 * 8 + 8 + 8 * 2 + 2 and facts["dtype"] == "float32"


def _ort(model, x):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    # the models declare a batch of 1: one run per point
    return np.concatenate([sess.run(None, {name: np.asarray([row], dtype=np.float32)})[0]
                           for row in np.asarray(x)])


def test_eval_single_point_matches_onnxruntime(capsys):
    code, out, err = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", BROKEN / "point.json")
    assert code == 0 and err == ""
    res = json.loads(out)
    point = json.loads((BROKEN / "point.json").read_text())
    assert np.allclose(res["outputs"], _ort(BROKEN / "valid_mlp.onnx", [point])[0])
    assert len(res["outputs"]) == 2  # a single point gives one flat vector


def test_eval_exact(capsys):
    code, out, _ = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", BROKEN / "point.json",
                       "--exact")
    res = json.loads(out)
    assert code == 0
    exact = [Fraction(s) for s in res["exact"]]
    assert all("/" in s for s in res["exact"])
    assert [float(q) for q in exact] == res["outputs"]
    # weights and the point are dyadic: float64 evaluation is exact here too
    code, out, _ = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", BROKEN / "point.json")
    assert json.loads(out)["outputs"] == res["outputs"]


def test_eval_many_points_json_and_npy(capsys, tmp_path):
    pts = np.random.default_rng(0).random((5, 4))
    jf = tmp_path / "pts.json"
    jf.write_text(json.dumps(pts.tolist()))
    nf = tmp_path / "pts.npy"
    np.save(nf, pts)
    code, out, _ = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", jf)
    from_json = np.array(json.loads(out)["outputs"])
    assert code == 0 and from_json.shape == (5, 2)
    assert np.allclose(from_json, _ort(BROKEN / "valid_mlp.onnx", pts), atol=1e-5)
    outf = tmp_path / "out.npy"
    code, out, _ = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", nf, "-o", outf)
    assert code == 0 and "wrote 5" in out
    assert np.array_equal(np.load(outf), from_json)
    outj = tmp_path / "out.json"
    code, _, _ = run(capsys, "eval", BROKEN / "valid_mlp.onnx", "--input", nf, "--exact", "-o", outj)
    res = json.loads(outj.read_text())
    assert code == 0 and len(res["exact"]) == 5 and np.allclose(res["outputs"], from_json)


def test_example_network(capsys):
    """The bundled example of the README loads and evaluates."""
    code, out, _ = run(capsys, "info", EXAMPLES / "tiny_mlp.onnx", "--json")
    facts = json.loads(out)
    assert code == 0 and facts["inputs"] == 4 and facts["outputs"] == 2
    assert [l["width"] for l in facts["hidden_layers"]] == [8, 8]
    code, out, _ = run(capsys, "eval", EXAMPLES / "tiny_mlp.onnx", "--input", EXAMPLES / "tiny_point.json",
                       "--exact")
    assert code == 0 and len(json.loads(out)["exact"]) == 2
    from leo_verify.domain import parse_domain
    box = parse_domain(str(EXAMPLES / "tiny_mlp_domain.json"), n=4)
    assert list(box.lower) == [0] * 4 and list(box.upper) == [1] * 4
