"""The checker kernel: what ``recheck`` trusts, and the attacks of a hostile reviewer.

Every attack must end in NOT CERTIFIED (exit 2) or a one-line error (exit 9 /
10 / 5), never exit 0 and never a traceback (70).
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kernel_cases import (ROOT, TINY, TINY_DOM, compress_into, copy_folder, edit_json, forged_piece_folder,
                          honest_folders, run_cli, sha, three_units)
from leo_verify.certify.proofs import smt2_name
from leo_verify.kernel.binding import plain_name
from leo_verify.kernel.claims import check_piece_tree
from leo_verify.kernel.exact import parse_rational


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    return honest_folders(tmp_path_factory.mktemp("honest"))


def _recheck(folder, *extra):
    return run_cli(["recheck", folder, "--json", *extra])


def _verdict(folder, *extra):
    code, out, err = _recheck(folder, *extra)
    return code, (json.loads(out) if code in (0, 2) else None), err


# -- the kernel's trust base ----------------------------------------------------------------
KERNEL = os.path.join(ROOT, "leo_verify", "kernel")
#: what kernel modules may import inside the package (besides each other)
ALLOWED_INTERNAL = {"graph", "errors", "util", "io"}
FORBIDDEN = ("z3", "highspy", "ortools", "scipy", "torch.optim", "leo_verify.analysis", "leo_verify.passes",
             "leo_verify.certify", "leo_verify.report", "leo_verify.compressor", "leo_verify.testing")


def test_kernel_sources_import_no_prover():
    for name in sorted(os.listdir(KERNEL)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(KERNEL, name)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                top = (node.module or "").split(".")[0]
                assert top in ALLOWED_INTERNAL, f"kernel/{name} imports ..{node.module}"
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith(("leo_verify.", "z3", "highspy", "ortools")), name
            elif isinstance(node, ast.Import):
                for a in node.names:
                    assert not a.name.startswith(("z3", "highspy", "ortools", "leo_verify")), f"kernel/{name}: {a.name}"


def test_recheck_loads_no_prover_module(honest):
    # a whole recheck in a fresh interpreter: no solver and no prover module gets imported
    code = ("import sys, json\n"
            "from leo_verify.kernel.recheck import recheck\n"
            f"s = recheck({honest['tiny']!r}, log=lambda *a: None)\n"
            "bad = sorted(m for m in sys.modules if m.startswith(" + repr(FORBIDDEN) + "))\n"
            "print(json.dumps({'verdict': s['verdict'], 'bad': bad}))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got == {"verdict": "certified", "bad": []}


def test_parse_rational_accepts_only_canonical_p_over_q():
    assert parse_rational("-3/4") == -0.75 and parse_rational("7") == 7
    for bad in ("1/0", "nan", "xyz", "1e3", "0.5", " 1", "2/4", "3/1", "-0", "+1", "1/-2", 1, None, "1" * 5000):
        with pytest.raises(ValueError):
            parse_rational(bad)


# -- honest certificates ----------------------------------------------------------------------
def test_honest_certificates_recheck_certified(honest):
    for name, folder in honest.items():
        code, s, err = _verdict(folder)
        assert code == 0 and s["verdict"] == "certified" and not s["failed"], (name, s, err)
        text = open(os.path.join(folder, "report.html")).read()
        assert "Rechecked by the checker kernel" in text


# -- 1. proofs must prove the very claim, in its direction --------------------------------------
def test_forged_piece_proof_with_a_wrong_direction_is_not_certified(tmp_path):
    out, model = forged_piece_folder(tmp_path)
    code, s, err = _verdict(out)
    assert code == 2 and s["verdict"] == "not certified", (s, err)
    assert "stability:relu1[0]" in s["failed"]
    # the forgery's tree is rejected on its own: a half proving the opposite direction proves nothing
    doc = json.load(open(os.path.join(out, "proofs", "certificate.json")))
    net = three_units(-0.5)
    from fractions import Fraction
    box = ([Fraction(0)] * 2, [Fraction(1)] * 2)
    assert check_piece_tree(net, doc["regions"][0]["pieces"], box, {"relu1[0]": "inactive"}) == set()
    # the same tree with both halves honest about the claimed direction would be checked
    assert check_piece_tree(net, doc["regions"][0]["pieces"], box, {"relu1[0]": "active"}) == set()
    # and the dropped unit really changes the function on half the box
    code, so, _ = run_cli(["check", model, os.path.join(out, "compressed.onnx"), "--domain", "box:0,1",
                           "--epsilon", "1e-3"])
    assert code == 1, so


def test_flipped_claim_direction_is_not_certified(honest, tmp_path):
    out = copy_folder(honest["tiny"], tmp_path / "t")

    def flip(doc):
        c = next(c for c in doc["regions"][0]["claims"] if c["status"] == "proven")
        c["claim"] = "active" if c["claim"] == "inactive" else "inactive"
    edit_json(os.path.join(out, "proofs", "certificate.json"), flip)
    code, s, _ = _verdict(out)
    assert code == 2 and any(k.startswith("stability:") for k in s["failed"])


# -- 2. binding of files ---------------------------------------------------------------------------
def _cert(folder):
    return os.path.join(folder, "proofs", "certificate.json")


@pytest.mark.parametrize("attack", ["empty", "decoy", "escape", "null_sha", "unlisted", "missing", "renamed",
                                    "edited_byte", "symlink"])
def test_unbound_files_are_not_certified(honest, tmp_path, attack):
    out = copy_folder(honest["tiny"], tmp_path / "t")
    onnx_path = os.path.join(out, "compressed.onnx")
    if attack == "empty":
        edit_json(_cert(out), lambda d: d.update(emitted={}))
    elif attack == "decoy":  # a decoy copy listed under another name, the real file modified
        shutil.copy(onnx_path, os.path.join(out, "compressed.bak"))
        edit_json(_cert(out), lambda d: d.update(emitted={"compressed.bak": d["emitted"]["compressed.onnx"]}))
        with open(onnx_path, "r+b") as fh:
            fh.seek(-3, 2)
            fh.write(b"\x00\x00\x00")
    elif attack == "escape":
        edit_json(_cert(out), lambda d: d.update(emitted={"../elsewhere/compressed.onnx": d["emitted"]["compressed.onnx"]}))
    elif attack == "null_sha":
        edit_json(_cert(out), lambda d: d["original"].update(sha256=None))
    elif attack == "unlisted":
        shutil.copy(onnx_path, os.path.join(out, "compressed.pt"))
    elif attack == "missing":
        os.remove(onnx_path)
    elif attack == "renamed":
        os.rename(onnx_path, os.path.join(out, "compressed.onnx2"))
    elif attack == "edited_byte":
        data = bytearray(open(onnx_path, "rb").read())
        data[len(data) // 2] ^= 1
        open(onnx_path, "wb").write(bytes(data))
    elif attack == "symlink":
        real = os.path.join(str(tmp_path), "real.onnx")
        shutil.move(onnx_path, real)
        os.symlink(real, onnx_path)
    code, out_text, err = _recheck(out)
    assert code in (2, 9), (code, out_text, err)
    assert "Traceback" not in err
    if code == 9:
        assert len(err.strip().splitlines()) == 1 and err.startswith("leo-verify: error: ")
    else:
        assert json.loads(out_text)["verdict"] == "not certified"


def test_recheck_with_another_model_is_not_certified(honest, tmp_path):
    other = tmp_path / "other.onnx"
    from leo_verify.io.onnx import save_onnx
    save_onnx(three_units(-0.5), str(other))  # another size: 2 inputs, 3 units
    code, s, err = _verdict(honest["tiny"], "--model", str(other))
    assert code == 2 and "hash:original" in s["failed"], err


# -- 3. report.json must agree with the certificate ---------------------------------------------------
@pytest.mark.parametrize("field,edit", [
    ("report:domain", lambda r: r["domain"]["upper"].__setitem__(0, 2.0)),
    ("report:model.sha256", lambda r: r["model"].update(sha256="0" * 64)),
    ("report:certificate.epsilon", lambda r: r["certificate"]["epsilon"]["compressed.onnx"].update(exact="1/2")),
    ("report:after", lambda r: r["after"].update(neurons=r["after"]["neurons"] - 1)),
    ("report:before", lambda r: r["before"]["widths"].__setitem__(0, 99)),
    ("report:outputs", lambda r: r["outputs"]["onnx"].update(sha256="f" * 64)),
    ("report:obligations", lambda r: r["obligations"].pop()),
])
def test_report_json_edits_are_named_and_re_rendered(honest, tmp_path, field, edit):
    out = copy_folder(honest["tiny"], tmp_path / "t")
    edit_json(os.path.join(out, "report.json"), edit)
    code, s, err = _verdict(out)
    assert code == 2 and field in s["failed"], (s, err)
    html = open(os.path.join(out, "report.html")).read()
    md = open(os.path.join(out, "report.md")).read()
    assert "NOT CERTIFIED" in html and field in html
    assert "NOT CERTIFIED" in md


def test_report_command_marks_pages_not_rechecked(honest, tmp_path):
    out = copy_folder(honest["tiny"], tmp_path / "t")
    code, _, err = run_cli(["report", out])
    assert code == 0, err
    assert "Not rechecked" in open(os.path.join(out, "report.md")).read()


# -- 4. strict schema: junk fields are one line naming the field, exit 9 -----------------------------
@pytest.mark.parametrize("edit,path", [
    (lambda d: d["epsilon"].update({"compressed.onnx": "1/0"}), 'epsilon.compressed.onnx: "1/0" is not a rational'),
    (lambda d: d["epsilon"].update({"compressed.onnx": "nan"}), 'epsilon.compressed.onnx: "nan" is not a rational'),
    (lambda d: d["epsilon"].update({"compressed.onnx": "xyz"}), "epsilon.compressed.onnx"),
    (lambda d: d["regions"][0]["claims"].append("not a claim"), "regions[0].claims["),
    (lambda d: d["regions"][0]["claims"].append({"neuron": "relu1[0]"}), "regions[0].claims["),
    (lambda d: d["regions"][0]["lemmas"][0].update(index="abc"), "regions[0].lemmas[0].index"),
    (lambda d: d["regions"][0]["lemmas"][0].update(multipliers="xyz"), "regions[0].lemmas[0].multipliers"),
    (lambda d: d["regions"][0]["lemmas"][0]["multipliers"].update({"0": "1/0"}), "regions[0].lemmas[0].multipliers.0"),
    (lambda d: d.update(extra_field=1), "extra_field"),
    (lambda d: d["regions"][0]["lower"].__setitem__(0, 0.0), "regions[0].lower[0]"),
    (lambda d: d.update(schema="leo_verify.certificate/2"), "schema"),
    (lambda d: d["regions"][0]["claims"][0].update(claim="sideways"), "regions[0].claims[0].claim"),
])
def test_junk_certificate_fields_exit_9_naming_the_field(honest, tmp_path, edit, path):
    out = copy_folder(honest["tiny"], tmp_path / "t")
    edit_json(_cert(out), edit)
    code, so, err = _recheck(out)
    assert code == 9, (code, so, err)
    line = err.strip()
    assert len(line.splitlines()) == 1 and line.startswith("leo-verify: error: ") and path in line, line
    assert "NOT CERTIFIED" in open(os.path.join(out, "report.html")).read()


def test_deeply_nested_certificate_is_one_line(honest, tmp_path):
    out = copy_folder(honest["tiny"], tmp_path / "t")
    text = open(_cert(out)).read()
    doc = json.loads(text)
    doc["regions"][0]["claims"][0]["proof"] = "PLACEHOLDER"
    text = json.dumps(doc).replace('"PLACEHOLDER"', '{"split": {"kind": "relu", "neuron": "relu1[0]"}, "children": ['
                                   * 3000 + '{"proof": "interval"}' + ', {"proof": "interval"}]}' * 3000)
    open(_cert(out), "w").write(text)
    code, so, err = _recheck(out)
    assert code == 9 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# -- 5. names never become paths ------------------------------------------------------------------------
NASTY = ["StatefulPartitionedCall/sequential/dense_1/Relu[3]", "../../etc/passwd[0]", "a:b\\c[1]", "with space[2]",
         "ünïcødé/名前[4]", "x" * 300 + "[5]", "/abs/path[6]", "..[7]", "\x00nul[8]", "CON[9]"]


def test_smt2_names_are_plain_and_unique():
    names = [smt2_name(n) for n in NASTY]
    assert len(set(names)) == len(names)
    for n in names:
        assert plain_name(n) and n.startswith("claim_") and n.endswith(".smt2") and len(n) < 100, n
    # names that differ only in characters the sanitiser drops still get different files
    assert smt2_name("a/b[0]") != smt2_name("a:b[0]")


def _rename_nodes(src, dst, prefix):
    """The tiny net with every node and tensor renamed TensorFlow-style (``/`` in every name)."""
    import onnx
    m = onnx.load(src)
    names = {}
    for i, node in enumerate(m.graph.node):
        node.name = f"{prefix}/{node.op_type}_{i}:0 ü"
        for k, t in enumerate(node.output):
            names.setdefault(t, f"{prefix}/{node.op_type}_{i}/out{k}")
    for t in m.graph.initializer:
        names.setdefault(t.name, f"{prefix}/{t.name}/ReadVariableOp")
    for node in m.graph.node:
        node.input[:] = [names.get(t, t) for t in node.input]
        node.output[:] = [names.get(t, t) for t in node.output]
    for t in m.graph.initializer:
        t.name = names[t.name]
    for o in m.graph.output:
        o.name = names.get(o.name, o.name)
    onnx.checker.check_model(m)
    onnx.save(m, dst)


def test_compress_and_recheck_a_network_with_slashes_in_every_name(tmp_path):
    model = str(tmp_path / "tf_style.onnx")
    _rename_nodes(TINY, model, "StatefulPartitionedCall/sequential/../dense_1")
    out = compress_into(model, tmp_path / "out", "--domain", TINY_DOM)
    files = os.listdir(os.path.join(out, "proofs"))
    assert any(f.endswith(".smt2") for f in files), files  # the branching claim still gets its file
    assert all(plain_name(f) for f in files)
    assert not os.path.exists(tmp_path / "out" / "StatefulPartitionedCall")
    code, s, err = _verdict(out)
    assert code == 0 and s["verdict"] == "certified", (s, err)


# -- 6. unusable output paths ----------------------------------------------------------------------------
def test_compress_into_a_path_under_a_regular_file_is_exit_10(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, so, err = run_cli(["compress", TINY, "--domain", TINY_DOM, "-o", str(afile / "sub")])
    assert code == 10 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_recheck_of_a_missing_folder_is_exit_4(tmp_path):
    code, so, err = run_cli(["recheck", str(tmp_path / "nope")])
    assert code == 4 and "Traceback" not in err


# -- 7. emitted files a runtime reads differently from the reader (found by a hostile review) --------
def _rehash(out):
    h = sha(os.path.join(out, "compressed.onnx"))
    edit_json(os.path.join(out, "proofs", "certificate.json"),
              lambda d: d["emitted"]["compressed.onnx"].update(sha256=h))
    edit_json(os.path.join(out, "report.json"), lambda d: d["outputs"]["onnx"].update(sha256=h))


def _forge_onnx(out, fn):
    import onnx
    path = os.path.join(out, "compressed.onnx")
    m = onnx.load(path)
    fn(m)
    onnx.checker.check_model(m)
    onnx.save(m, path)
    _rehash(out)


def _batch_mix(m):
    # x -> Reshape[2,-1] -> Transpose -> Reshape[-1,4]: the reader (batch 1) sees a column
    # permutation, which the permuted weights undo; a runtime mixes the samples of a batch
    from onnx import helper, numpy_helper
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    first = g.node[0]
    w = numpy_helper.to_array(inits[first.input[1]])
    inits[first.input[1]].CopyFrom(numpy_helper.from_array(w[:, [0, 2, 1, 3]].copy(), first.input[1]))
    g.initializer.extend([numpy_helper.from_array(np.array([2, -1], dtype=np.int64), "s1"),
                          numpy_helper.from_array(np.array([-1, 4], dtype=np.int64), "s2")])
    new = [helper.make_node("Reshape", ["input", "s1"], ["r1"]), helper.make_node("Transpose", ["r1"], ["t1"], perm=[1, 0]),
           helper.make_node("Reshape", ["t1", "s2"], ["r2"])]
    first.input[0] = "r2"
    nodes = new + list(g.node)
    del g.node[:]
    g.node.extend(nodes)


def _cast_pair(m):
    # float32 -> float64 -> float32 casts: the identity for the reader, a rounding for a runtime
    # (in a float32 file the same op pair is a no-op; it must still not be the writer's form)
    import onnx
    from onnx import helper
    g = m.graph
    out = g.output[0].name
    g.node[-1].output[0] = "pre_out"
    g.node.extend([helper.make_node("Cast", ["pre_out"], ["c64"], to=onnx.TensorProto.DOUBLE),
                   helper.make_node("Cast", ["c64"], [out], to=onnx.TensorProto.FLOAT)])


@pytest.mark.parametrize("forge", [_batch_mix, _cast_pair], ids=["batch_mix", "cast_pair"])
def test_emitted_onnx_outside_the_writer_form_is_not_certified(honest, tmp_path, forge):
    out = copy_folder(honest["tiny"], tmp_path / "t")
    _forge_onnx(out, forge)
    code, s, err = _verdict(out)
    assert code == 2 and "form:compressed.onnx" in s["failed"], (s, err)


def test_model_path_that_is_not_a_regular_file_is_one_line(honest, tmp_path):
    out = copy_folder(honest["tiny"], tmp_path / "t")
    edit_json(os.path.join(out, "report.json"), lambda d: d["model"].update(source="/dev/zero"))
    code, so, err = _recheck(out)
    assert code == 4 and "not a regular file" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("edit", [
    lambda c, r: c["regions"][0]["upper"].__setitem__(0, "1" + "0" * 400),
    lambda c, r: (c["epsilon"].update({"compressed.onnx": "1" + "0" * 400}),
                  r["certificate"]["epsilon"]["compressed.onnx"].update(exact="1" + "0" * 400)),
])
def test_rationals_beyond_the_float_range_do_not_crash(honest, tmp_path, edit):
    out = copy_folder(honest["tiny"], tmp_path / "t")
    c = json.load(open(_cert(out)))
    r = json.load(open(os.path.join(out, "report.json")))
    edit(c, r)
    json.dump(c, open(_cert(out), "w"))
    json.dump(r, open(os.path.join(out, "report.json"), "w"))
    code, so, err = _recheck(out)
    assert code == 2 and json.loads(so)["verdict"] == "not certified", (code, err)


def test_unreadable_emitted_file_with_a_matching_hash_leaves_no_certified_page(honest, tmp_path):
    out = copy_folder(honest["tiny"], tmp_path / "t")
    with open(os.path.join(out, "compressed.onnx"), "wb") as fh:
        fh.write(os.urandom(100))
    _rehash(out)
    code, so, err = _recheck(out)
    assert code in (2, 5) and "Traceback" not in err
    assert "<title>CERTIFIED" not in open(os.path.join(out, "report.html")).read()


def test_a_consistently_widened_domain_fails_when_the_reviewer_pins_the_domain(honest, tmp_path):
    out = copy_folder(honest["tiny"], tmp_path / "t")

    def widen(c, r):
        c["regions"][0]["upper"][0] = "2"
        r["domain"]["upper"][0] = 2.0
    c = json.load(open(_cert(out)))
    r = json.load(open(os.path.join(out, "report.json")))
    widen(c, r)
    json.dump(c, open(_cert(out), "w"))
    json.dump(r, open(os.path.join(out, "report.json"), "w"))
    code, s, err = _verdict(out, "--domain", TINY_DOM)
    assert code == 2 and "domain:requested" in s["failed"], (s, err)
    # without --domain the verdict is about the stated box, and says which box that is
    code, text, _ = run_cli(["recheck", out])
    assert "domain [0, 2]" in text or "[0, 2]" in text or "not certified" in text.lower()
    assert "pin it with --domain" in text
