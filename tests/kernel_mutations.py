"""Mutation campaign against the checker kernel (``recheck``).

Honest output folders are mutated the ways a hostile reviewer would (hypothesis
draws the mutation): flip a direction, change any rational (sign, +1 in a
numerator, another float, junk text), swap two neuron ids, drop / duplicate /
swap list entries, drop or add keys, move a split point or dimension, widen a
domain bound (in the certificate, or consistently in both files), edit one
byte of an emitted file, change one number of an emitted ONNX file (a weight, a
``Conv`` attribute, a ``Gather`` index) and re-hash it in both files, rename an
emitted entry, add an unlisted model file, edit report.json.  After each mutation the kernel's ``recheck`` runs on the
folder, with the original model and the domain pinned as a reviewer would
(``recheck OUT/ --model M --domain D``).  It must

* never crash (only :class:`~leo_verify.errors.LeoError` may escape, which the
  CLI prints as one line), and
* never say ``certified`` unless the mutation left the *meaning* unchanged:
  the same original hash, domain, emitted bytes and hashes, eps, verdict and
  the same proven (neuron, direction) claims (editing an informational field,
  or replacing a multiplier by another one that still proves the bound,
  changes no meaning; nor does the direction of a claim on a neuron whose
  pre-activation is exactly 0 on the box, where both directions are true).

As a benchmark: ``python tests/kernel_mutations.py [--n 1000]`` prints
``N mutations, 0 accepted, 0 crashes`` (accepted = meaning changed, yet
certified).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from fractions import Fraction

import numpy as np

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_verify.errors import LeoError
from leo_verify.kernel.exact import fraction_str
from leo_verify.kernel.recheck import recheck

_RAT = re.compile(r"^-?(0|[1-9][0-9]*)(/[1-9][0-9]*)?$")
_NID = re.compile(r"^.+\[(0|[1-9][0-9]*)\]$")
CERT = os.path.join("proofs", "certificate.json")


def _load(folder, rel):
    with open(os.path.join(folder, rel)) as fh:
        return json.load(fh)


def _sha(path):
    import hashlib
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _num(v):
    """A number's exact value (0 and 0.0 mean the same); anything else as text."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            return str(Fraction(v))
        except (ValueError, OverflowError):
            return repr(v)
    return json.dumps(v)


_ZERO_CACHE: dict = {}


def zero_units(model: str, box) -> frozenset:
    """Neurons whose pre-activation is exactly 0 on the whole box (exact interval bounds
    ``[0, 0]``, e.g. a MaxPool difference of two dead units): for them "active" and "inactive"
    are both true, so a flipped claim is a true claim and recheck may accept it."""
    key = (model, json.dumps([[str(v) for v in lo] + [str(v) for v in hi] for lo, hi in box]))
    if key not in _ZERO_CACHE:
        from leo_verify.io.onnx import load_onnx
        from leo_verify.kernel.intervals import node_bounds
        g = load_onnx(model)
        zero = set()
        for lo, hi in box:
            bounds = node_bounds(g, (lo, hi))
            units = set()
            for name, op in g.relus():
                blo, bhi = bounds[g.args(name)[0]]
                units |= {nid for k, nid in enumerate(op.neurons) if blo.fraction(k) == 0 == bhi.fraction(k)}
            zero = units if not zero else zero & units
        _ZERO_CACHE[key] = frozenset(zero)
    return _ZERO_CACHE[key]


def meaning(folder, zero: frozenset = frozenset()) -> tuple:
    """What a certified verdict asserts about ``folder`` (see the module docstring); the
    direction of a claim on a neuron of ``zero`` (identically 0) asserts nothing more."""
    try:
        c = _load(folder, CERT)
        r = _load(folder, "report.json")
        files = sorted((n, _sha(os.path.join(folder, n))) for n in os.listdir(folder) if n.startswith("compressed."))
        proven = sorted((k, x.get("neuron"), "either" if x.get("neuron") in zero else x.get("claim"))
                        for k, r in enumerate(c.get("regions", []))
                        for x in r.get("claims", []) if isinstance(x, dict) and x.get("status") == "proven")
        boxes = [(r.get("lower"), r.get("upper")) for r in c.get("regions", [])]
        return (json.dumps([c.get("original"), boxes, c.get("emitted"), c.get("epsilon"),
                            c.get("verdict"), proven], sort_keys=True),
                json.dumps([r.get("model", {}).get("sha256"),
                            [_num(v) for v in r.get("domain", {}).get("lower", [])],
                            [_num(v) for v in r.get("domain", {}).get("upper", [])], r.get("outputs"),
                            r.get("certificate", {}).get("verdict"), r.get("certificate", {}).get("epsilon")],
                           sort_keys=True), files)
    except (OSError, ValueError, AttributeError, TypeError):
        return ("unreadable",)


def _same_function(honest: str, folder: str, box) -> bool:
    """A re-hashed ONNX edit is harmless when the emitted file still computes what the honest
    one does on the domain: a weight that multiplies a unit dead on the box, a pad the
    strides never reach (certified, rightly).  Both files run in onnxruntime on 1,000
    points of every region plus its two corners; any difference at all counts as a change
    (an edit within eps elsewhere would be flagged too: the campaign errs on the loud side)."""
    import onnxruntime as ort
    names = [n for n in os.listdir(honest) if n.startswith("compressed.") and n.endswith(".onnx")]
    rng = np.random.default_rng(0)
    for name in names:
        try:
            runs = [ort.InferenceSession(os.path.join(f, name), providers=["CPUExecutionProvider"])
                    for f in (honest, folder)]
        except Exception:  # noqa: BLE001 - onnxruntime refusing the mutated file: not the same function
            return False
        inp = runs[0].get_inputs()[0]
        dtype = np.float64 if "double" in inp.type else np.float32
        shape = [d if isinstance(d, int) else -1 for d in inp.shape]
        batch = shape[0] if shape[0] > 0 else 1002  # a file with a fixed batch of 1 runs per point
        for lo, hi in box:
            lo, hi = np.array([float(v) for v in lo]), np.array([float(v) for v in hi])
            x = np.vstack([lo, hi, lo + (hi - lo) * rng.random((1000, len(lo)))]).astype(dtype)
            x = x.reshape([len(x)] + shape[1:])
            for k in range(0, len(x), batch):
                try:
                    a, b = (r.run(None, {inp.name: x[k:k + batch]})[0] for r in runs)
                except Exception:  # noqa: BLE001 - a run the mutated file cannot do: not the same
                    return False
                if a.shape != b.shape or not np.array_equal(a, b):
                    return False
    return True


# -- drawing a mutation -------------------------------------------------------------------------
def _leaves(doc):
    """[(path, value)] of every node of a JSON document (iteratively)."""
    out, stack = [], [((), doc)]
    while stack:
        path, v = stack.pop()
        out.append((path, v))
        if isinstance(v, dict):
            stack.extend((path + (k,), x) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((path + (i,), x) for i, x in enumerate(v))
    return out


def _category(v) -> str:
    if isinstance(v, str):
        if v in ("active", "inactive"):
            return "direction"
        if _RAT.match(v):
            return "rational"
        if _NID.match(v):
            return "neuron"
        return "string"
    if isinstance(v, bool) or v is None:
        return "constant"
    if isinstance(v, (int, float)):
        return "number"
    return "list" if isinstance(v, list) else "dict"


def _set(doc, path, value):
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value


def _mutate_rational(data, v: str) -> str:
    f = Fraction(v)
    op = data.draw(st.sampled_from(["neg", "num+1", "den*2", "float", "junk", "zero", "tiny"]))
    if op == "neg":
        return fraction_str(-f) if f != 0 else "1"
    if op == "num+1":
        return fraction_str(Fraction(f.numerator + 1, f.denominator))
    if op == "den*2":
        return f"{f.numerator * 2}/{f.denominator * 2}"  # not in lowest terms
    if op == "float":
        x = data.draw(st.floats(allow_nan=False, allow_infinity=False, width=64))
        return fraction_str(Fraction(x)) if Fraction(x) != f else fraction_str(f + 1)
    if op == "zero":
        return "0" if f != 0 else "-1"
    if op == "tiny":
        return fraction_str(f + Fraction(1, 2 ** 60))
    return data.draw(st.sampled_from(["1/0", "nan", "xyz", "1e3", "0.5", " 1", "-0", "", "inf"]))


def mutate_json(data, doc, neuron_ids: list) -> str:
    """Mutate ``doc`` in place; returns a description."""
    leaves = _leaves(doc)
    by_cat: dict = {}
    for path, v in leaves:
        by_cat.setdefault(_category(v), []).append((path, v))
    cat = data.draw(st.sampled_from(sorted(by_cat)))
    path, v = data.draw(st.sampled_from(by_cat[cat]))
    where = "/".join(map(str, path))
    if cat == "direction":
        _set(doc, path, "active" if v == "inactive" else "inactive")
        return f"flip {where}"
    if cat == "rational":
        new = _mutate_rational(data, v)
        _set(doc, path, new)
        return f"rational {where}: {v[:30]} -> {new[:30]}"
    if cat == "neuron":
        others = [n for n in neuron_ids if n != v] or ["nope[0]"]
        new = data.draw(st.sampled_from(others + [v + "x", v.replace("[", "[1"), "../" + v]))
        _set(doc, path, new)
        return f"neuron {where}: {v} -> {new}"
    if cat == "string":
        new = data.draw(st.sampled_from(["", "x", v + "x", v.upper(), "../" + v, "certified", "not certified",
                                         "compressed.onnx", "proven", "open", "passed", "refuted"]))
        if not path:
            return "noop"
        _set(doc, path, new)
        return f"string {where}: {v[:30]!r} -> {new[:30]!r}"
    if cat == "number":
        new = data.draw(st.sampled_from([v + 1, v - 1, -v - 1, 0, 10 ** 12, float("nan"), float("inf"), 0.5,
                                         str(v), None]))
        _set(doc, path, new)
        return f"number {where}: {v} -> {new}"
    if cat == "constant":
        new = data.draw(st.sampled_from([0, "x", {}, [], True, None]))
        if new == v and type(new) is type(v):
            new = "x"
        if not path:
            return "noop"
        _set(doc, path, new)
        return f"constant {where}: {v} -> {new}"
    if cat == "list":
        if not v:
            v.append(data.draw(st.sampled_from(["0", 0, {}, "relu1[0]"])))
            return f"append to empty {where}"
        op = data.draw(st.sampled_from(["drop", "dup", "swap", "clear", "reverse"]))
        i = data.draw(st.integers(0, len(v) - 1))
        if op == "drop":
            v.pop(i)
        elif op == "dup":
            v.insert(i, json.loads(json.dumps(v[i])))
        elif op == "swap" and len(v) > 1:
            j = data.draw(st.integers(0, len(v) - 1))
            v[i], v[j] = v[j], v[i]
        elif op == "clear":
            v.clear()
        else:
            v.reverse()
        return f"list {op} {where}[{i}]"
    # dict
    if not v:
        v["junk"] = 1
        return f"dict add junk {where}"
    op = data.draw(st.sampled_from(["drop", "add", "rename"]))
    k = data.draw(st.sampled_from(sorted(v)))
    if op == "drop":
        v.pop(k)
    elif op == "add":
        v[k + "_x"] = json.loads(json.dumps(v[k]))
    else:
        v[data.draw(st.sampled_from([k + "x", "../" + k, k.upper(), "0"]))] = v.pop(k)
    return f"dict {op} {where}.{k}"


def _neuron_ids(cert) -> list:
    return sorted({c["neuron"] for r in cert.get("regions", []) for c in r.get("claims", [])})


def apply_mutation(data, folder) -> str:
    """Draw and apply one mutation to ``folder``; returns a description."""
    what = data.draw(st.sampled_from(["cert"] * 8 + ["report"] * 3 + ["widen_both", "swap_ids", "byte",
                                                                       "rename_entry", "rename_file", "extra_file",
                                                                       "move_cut", "model_rehashed"]))
    cpath, rpath = os.path.join(folder, CERT), os.path.join(folder, "report.json")
    cert, report = _load(folder, CERT), _load(folder, "report.json")
    emitted = sorted(cert["emitted"])
    desc = what
    if what == "cert":
        desc = "cert: " + mutate_json(data, cert, _neuron_ids(cert))
    elif what == "report":
        desc = "report: " + mutate_json(data, report, _neuron_ids(cert))
    elif what == "widen_both":
        reg = cert["regions"][0]
        i = data.draw(st.integers(0, len(reg["lower"]) - 1))
        side = data.draw(st.sampled_from(["lower", "upper"]))
        delta = Fraction(data.draw(st.sampled_from([1, 2 ** -20, 2 ** -52, 1000])))
        new = Fraction(reg[side][i]) + (-delta if side == "lower" else delta)
        reg[side][i] = fraction_str(new)
        report["domain"][side][i] = float(new)
        desc = f"widen {side}[{i}] by {delta} in both files"
    elif what == "swap_ids":
        proven = [c for c in cert["regions"][0]["claims"] if c["status"] == "proven"]
        if len(proven) >= 2:
            a, b = data.draw(st.sampled_from([(x, y) for x in proven for y in proven if x is not y][:200]))
            a["neuron"], b["neuron"] = b["neuron"], a["neuron"]
            desc = f"swap ids {a['neuron']} <-> {b['neuron']}"
        else:
            desc = "swap ids: fewer than two proven claims; flip instead"
            proven[0]["claim"] = "active" if proven[0]["claim"] == "inactive" else "inactive"
    elif what == "byte":
        name = data.draw(st.sampled_from(emitted))
        p = os.path.join(folder, name)
        raw = bytearray(open(p, "rb").read())
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
        open(p, "wb").write(bytes(raw))
        desc = f"byte {i} of {name}"
    elif what == "model_rehashed":
        desc = _edit_model_rehashed(data, folder, cert, report, emitted)
    elif what == "rename_entry":
        name = data.draw(st.sampled_from(emitted))
        new = data.draw(st.sampled_from(["compressed.pt", "compressed.onnx2", "compressed.nnet"]))
        cert["emitted"][new] = cert["emitted"].pop(name)
        desc = f"rename entry {name} -> {new}"
    elif what == "rename_file":
        name = data.draw(st.sampled_from(emitted))
        os.rename(os.path.join(folder, name), os.path.join(folder, name + ".orig"))
        desc = f"rename file {name}"
    elif what == "extra_file":
        name = data.draw(st.sampled_from(emitted))
        shutil.copy(os.path.join(folder, name), os.path.join(folder, "compressed.pt" if name != "compressed.pt"
                                                             else "compressed.onnx"))
        desc = "extra unlisted model file"
    elif what == "move_cut":
        cuts = [(p, v) for p, v in _leaves(cert) if p and p[-1] == "split" and isinstance(v, dict)]
        if cuts:
            path, split = data.draw(st.sampled_from(cuts))
            if "dim" in split and data.draw(st.booleans()):
                split["dim"] = split["dim"] + data.draw(st.sampled_from([1, -1, 5]))
                desc = f"move cut dim at {'/'.join(map(str, path))}"
            elif "at" in split:
                split["at"] = _mutate_rational(data, split["at"])
                desc = f"move cut point at {'/'.join(map(str, path))}"
            else:
                split["neuron"] = data.draw(st.sampled_from(_neuron_ids(cert)))
                desc = f"move phase split at {'/'.join(map(str, path))}"
        else:
            desc = "move_cut: no cut; flip the first proven claim"
            c = next(c for c in cert["regions"][0]["claims"] if c["status"] == "proven")
            c["claim"] = "active" if c["claim"] == "inactive" else "inactive"
    with open(cpath, "w") as fh:
        json.dump(cert, fh)
    with open(rpath, "w") as fh:
        json.dump(report, fh)
    return desc


def _edit_model_rehashed(data, folder, cert, report, emitted) -> str:
    """One number of an emitted ONNX file changed (a weight, a Conv attribute, a Gather index,
    a Reshape shape), and its new sha256 written into the certificate and the report: the
    binding then holds, and only the kernel's reading of the file can refuse it."""
    import onnx
    from onnx import numpy_helper
    name = next((n for n in emitted if n.endswith(".onnx")), None)
    if name is None:
        return "model_rehashed: no ONNX file"
    path = os.path.join(folder, name)
    m = onnx.load(path)
    targets = [("init", t.name) for t in m.graph.initializer] + \
        [("attr", (k, a.name)) for k, n in enumerate(m.graph.node) for a in n.attribute
         if a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS)]
    kind, key = data.draw(st.sampled_from(targets))
    if kind == "init":
        t = next(t for t in m.graph.initializer if t.name == key)
        arr = numpy_helper.to_array(t).copy()
        if not arr.size:
            return "model_rehashed: empty initializer"
        i = data.draw(st.integers(0, arr.size - 1))
        if arr.dtype.kind == "f":
            arr.flat[i] = arr.flat[i] + data.draw(st.sampled_from([1.0, -1.0, 2.0 ** -20, 0.5])) \
                if data.draw(st.booleans()) else np.nextafter(arr.flat[i], np.inf)
        else:
            arr.flat[i] = arr.flat[i] + data.draw(st.sampled_from([1, -1, 2]))
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        desc = f"model_rehashed: {key}[{i}]"
    else:
        k, aname = key
        a = next(a for a in m.graph.node[k].attribute if a.name == aname)
        if a.type == onnx.AttributeProto.INT:
            a.i += data.draw(st.sampled_from([1, -1]))
        elif len(a.ints):
            j = data.draw(st.integers(0, len(a.ints) - 1))
            a.ints[j] += data.draw(st.sampled_from([1, -1]))
        desc = f"model_rehashed: node {k} attribute {aname}"
    onnx.save(m, path)
    digest = _sha(path)
    cert["emitted"][name]["sha256"] = digest
    for out in report.get("outputs", {}).values():
        if isinstance(out, dict) and out.get("file", name) == name and "sha256" in out:
            out["sha256"] = digest
    return desc


class Tally:
    def __init__(self):
        self.n = self.accepted_harmless = self.accepted_bad = self.crashes = self.errors = self.rejected = 0
        self.examples: list = []
        self.harmless: list = []


def one(data, honest: str, work_root: str, tally: Tally, *, strict: bool) -> None:
    """One mutation of ``honest`` (a folder), checked; ``strict``: raise on a failure."""
    work = tempfile.mkdtemp(dir=work_root)
    try:
        folder = os.path.join(work, "out")
        shutil.copytree(honest, folder)
        # the reviewer's own inputs, taken before the mutation: the original model and the box
        model = _load(folder, "report.json")["model"]["source"]
        box = [([Fraction(v) for v in r["lower"]], [Fraction(v) for v in r["upper"]])
               for r in _load(folder, CERT)["regions"]]
        zero = zero_units(model, box)
        before = meaning(folder, zero)
        desc = apply_mutation(data, folder)
        tally.n += 1
        try:
            s = recheck(folder, model=model, domain=box, log=lambda *a: None)
        except LeoError as e:
            tally.errors += 1
            if e.exit_code not in (4, 5, 6, 7, 9):
                raise AssertionError(f"{desc}: exit {e.exit_code}: {e}") from None
            return
        except Exception as e:  # noqa: BLE001 - a crash is exactly what this campaign looks for
            tally.crashes += 1
            tally.examples.append(f"CRASH {desc}: {type(e).__name__}: {e}")
            if strict:
                raise
            return
        if s["verdict"] != "certified":
            tally.rejected += 1
            return
        if meaning(folder, zero) == before or (desc.startswith("model_rehashed")
                                              and _same_function(honest, folder, box)):
            tally.accepted_harmless += 1
            tally.harmless.append(desc)
            return
        tally.accepted_bad += 1
        tally.examples.append(f"ACCEPTED {desc}")
        if strict:
            raise AssertionError(f"recheck said certified after a meaning-changing mutation: {desc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def campaign(folders: dict, n: int, *, strict: bool, seed: int | None = None) -> Tally:
    """``n`` mutations spread over ``folders`` (name -> honest folder)."""
    tally = Tally()
    names = sorted(folders)
    root = tempfile.mkdtemp(prefix="leo_mut_")

    @settings(max_examples=n, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), **({} if strict else {"phases": ["generate"]}))
    @given(st.data())
    def run(data):
        name = data.draw(st.sampled_from(names))
        one(data, folders[name], root, tally, strict=strict)

    if seed is not None:
        import hypothesis
        run = hypothesis.seed(seed)(run)
    try:
        run()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return tally


def main(argv=None) -> int:
    import argparse
    import time
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="mutations (default 1000)")
    p.add_argument("--seed", type=int, default=None, help="a fresh seed (default: derandomized)")
    p.add_argument("--show-harmless", action="store_true", help="list the certified, meaning-preserving ones")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from kernel_cases import honest_folders
    base = tempfile.mkdtemp(prefix="leo_honest_")
    t0 = time.monotonic()
    folders = honest_folders(base)
    t1 = time.monotonic()
    tally = campaign(folders, args.n, strict=False, seed=args.seed)
    t2 = time.monotonic()
    shutil.rmtree(base, ignore_errors=True)
    print(f"{tally.n} mutations, {tally.accepted_bad} accepted, {tally.crashes} crashes")
    print(f"  rejected: {tally.rejected} not certified, {tally.errors} one-line errors (exit 9/5/4); "
          f"{tally.accepted_harmless} certified with the meaning unchanged (informational fields, equivalent "
          f"proofs); honest folders {t1 - t0:.1f} s, campaign {t2 - t1:.1f} s")
    for e in tally.examples[:20]:
        print("  " + e)
    if args.show_harmless:
        from collections import Counter
        kinds = Counter(re.sub(r"[0-9]+", "N", d)[:70] for d in tally.harmless)
        for k, c in kinds.most_common(40):
            print(f"  harmless x{c}: {k}")
    return 0 if tally.accepted_bad == 0 and tally.crashes == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
