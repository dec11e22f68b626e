"""Checkpoints of a running analysis: a content-addressed, append-only journal.

A run is identified by its **key**: the sha256 of the canonical JSON
(:func:`canonical_json`: sorted keys, no spaces, floats as ``repr``) of

* the model: :func:`graph_fingerprint` (every node, argument, neuron id and the
  bytes of every weight, plus exact rational weights where the graph has them)
  and, when known, the sha256 of the model file;
* the domain: the exact box bounds (``float.hex`` of each bound);
* the method, the solver and every analysis option that can change an answer
  (:data:`NOT_KEY_OPTIONS` excludes only ``budget``, ``workers`` and ``progress``:
  a budget decides how far a run goes, not what it proves -- queries cut short
  by it are not journaled -- and each solver query is answered on a fresh
  solver copy, so the number of workers changes nothing), the margin
  ``TAU_REL`` and a digest of the ``data`` points;
* the versions of leo_verify, Python, numpy, networkx, OR-Tools, SCIP and HiGHS.

Same key => same model, domain, method, options and tool versions, so a
recorded answer is exactly as trustworthy as a fresh one.

The journal is ``<folder>/<key>.jsonl``, one JSON object per line, each with a
checksum ``"sum"`` (the first 16 hex digits of the sha256 of the canonical
JSON of the other fields):

``{"t": "header", "schema", "key", "material"}``
    first line; ``material`` is what the key hashes.
``{"t": "query", "q", "kind", "nid", "sense", "out"}``
    one finished solver query: ``q`` is its key (the run key, the query's
    neuron/row/sense/margin and a digest of everything its MILP is built
    from: node, proven bounds, fixed neurons, backend, threads, early stop,
    relaxation), ``out`` the solver's answer (verdict, dual, primal, point,
    statistics).  Errors and answers cut short by ``--budget`` are not
    recorded (they are redone on resume).
``{"t": "fact", "n", "f"}``
    a neuron decided (status, evidence, bounds, witnesses at that moment).
``{"t": "end", "complete", "stopped"}``
    a run finished or stopped (informational).

Every record is appended with one ``write`` and ``fsync``'d, under an
``flock`` of the journal, so concurrent runs of the same key interleave
whole lines.  On open, a torn last line (a run killed mid-write) is cut off;
a line whose JSON or checksum is bad is ignored.  JSON only, no pickle.

Resuming: the analysis runs again from the start -- bounds, witnesses and
input splitting are deterministic for a seed -- and every solver query whose
key is in the journal takes its recorded answer instead of running.  Since
the key of a query hashes everything its MILP is built from, a recorded
answer is used only for the identical query, and the resumed run's facts are
those of an uninterrupted run.  The decided facts of the journal are loaded
too: their number is reported, and they are checked against the replay.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
from fractions import Fraction

import numpy as np

__all__ = ["canonical_json", "graph_fingerprint", "run_material", "run_key", "default_dir",
           "Journal", "NOT_KEY_OPTIONS", "SCHEMA", "task_digest", "query_key", "program_digest",
           "solve_key", "read_journal"]

SCHEMA = "leo_verify.checkpoint/1"

#: AnalysisOptions fields left out of the key (they cannot change an answer).
NOT_KEY_OPTIONS = ("budget", "workers", "progress")


def canonical_json(obj) -> str:
    """Sorted keys, no whitespace, floats as their shortest round-trip repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      default=_default)


def _default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Fraction):
        return f"{o.numerator}/{o.denominator}"
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON: {type(o).__name__}")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _put_array(h, arr) -> None:
    a = np.asarray(arr)
    if a.dtype == object:  # exact rationals
        h.update(canonical_json([str(Fraction(v)) for v in a.ravel()]).encode())
    else:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(f"{a.shape}".encode())
        h.update(a.tobytes())


def graph_fingerprint(graph) -> str:
    """sha256 of the network the analysis works on: nodes in topological order,
    their kinds, arguments and every field of their op (arrays by their bytes)."""
    h = hashlib.sha256()
    for name in graph.nodes():
        op = graph.op(name)
        h.update(canonical_json({"node": name, "kind": op.kind, "args": graph.args(name)}).encode())
        _put_fields(h, op)
        h.update(b"\n")
    return h.hexdigest()


def _put_fields(h, obj) -> None:
    """Every field of a frozen payload (an op, or the conv layout it carries), arrays by bytes."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        h.update(f"|{f.name}=".encode())
        if isinstance(v, np.ndarray):
            _put_array(h, v)
        elif isinstance(v, tuple) and v and all(isinstance(x, np.ndarray) for x in v):
            for x in v:
                _put_array(h, x)
        elif dataclasses.is_dataclass(v):
            h.update(b"{")
            _put_fields(h, v)
            h.update(b"}")
        else:
            h.update(canonical_json(v).encode())


def _data_digest(data) -> str | None:
    if data is None:
        return None
    h = hashlib.sha256()
    _put_array(h, np.asarray(data, dtype=np.float64))
    return h.hexdigest()


def run_material(graph, box, options, *, data=None, versions: dict, tau_rel: float) -> dict:
    """What the key of a run hashes (see the module docstring)."""
    opts = {k: v for k, v in dataclasses.asdict(options).items() if k not in NOT_KEY_OPTIONS}
    return {
        "schema": SCHEMA,
        "model": {"graph": graph_fingerprint(graph), "file_sha256": graph.metadata.get("sha256")},
        "domain": {"lower": [float(v).hex() for v in box.lower],
                   "upper": [float(v).hex() for v in box.upper]},
        "options": opts,
        "tau_rel": float(tau_rel).hex(),
        "data": _data_digest(data),
        "versions": dict(versions),
    }


def run_key(material: dict) -> str:
    return _sha(canonical_json(material))


def default_dir() -> str:
    """``$LEO_VERIFY_CACHE/checkpoints``, else ``$XDG_CACHE_HOME/leo_verify/checkpoints``,
    else ``~/.cache/leo_verify/checkpoints``."""
    root = os.environ.get("LEO_VERIFY_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "leo_verify")
    return os.path.join(root, "checkpoints")


# -- query keys ---------------------------------------------------------------

def task_digest(task, run: str) -> str:
    """Digest of everything a :class:`~.queries.LayerTask` builds its MILP from,
    except the queries themselves (graph and box are in the run key)."""
    h = hashlib.sha256()
    h.update(canonical_json({"run": run, "pre": task.pre, "fixed": sorted(task.fixed.items()),
                             "backend": task.backend, "threads": int(task.threads),
                             "early_stop": bool(task.early_stop), "relax": bool(task.relax)}).encode())
    for name in sorted(task.bounds):
        lo, hi = task.bounds[name]
        h.update(f"|{name}".encode())
        _put_array(h, lo)
        _put_array(h, hi)
    return h.hexdigest()


def query_key(digest: str, q) -> str:
    return _sha(canonical_json([digest, q.nid, int(q.row), q.sense, float(q.tau).hex()]))


def program_digest(program) -> str:
    """Digest of a :class:`~.milp.Program` (variables, integrality, rows)."""
    h = hashlib.sha256()
    lb, ub = program.bounds()
    for a in (lb, ub, *program.csr()):
        _put_array(h, a)
    h.update(bytes(int(v.integer) for v in program.variables))
    return h.hexdigest()


def solve_key(run: str, program, objective, **options) -> str:
    """Key of one whole-program solve (ISA's rounds): program, objective, options."""
    return _sha(canonical_json({"run": run, "program": program_digest(program),
                                "objective": sorted((int(k), float(v)) for k, v in objective.items()),
                                "options": options}))


# -- the journal --------------------------------------------------------------

def _finite_json(obj) -> bool:
    try:
        canonical_json(obj)
        return True
    except (ValueError, TypeError):
        return False


class Journal:
    """The checkpoint journal of one run key (see the module docstring).

    Parameters
    ----------
    folder : where journals live (created if missing).
    material : :func:`run_material` of the run.
    query_time_limit : the configured per-query limit; an answer stopped by a
        smaller limit (the budget running out) is not a finished query.
    """

    def __init__(self, folder: str, material: dict, *, query_time_limit=None):
        self.folder = folder
        self.material = material
        self.key = run_key(material)
        self.path = os.path.join(folder, self.key + ".jsonl")
        self.query_time_limit = query_time_limit
        self.queries: dict = {}   # query key -> {"kind", "nid", "sense", "out"}
        self.facts: dict = {}     # neuron id -> fact record
        self.bad_lines = 0
        self.replayed = 0
        self.executed = 0
        os.makedirs(folder, exist_ok=True)
        created = not os.path.exists(self.path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if created:
                _fsync_dir(folder)
            with self._locked():
                self._load()
        except BaseException:
            os.close(self.fd)
            self.fd = None
            raise
        self.loaded_queries = len(self.queries)
        self.loaded_facts = len(self.facts)

    # -- file ------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self):
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _read_all(self) -> bytes:
        size = os.fstat(self.fd).st_size
        chunks, off = [], 0
        while off < size:
            b = os.pread(self.fd, min(1 << 24, size - off), off)
            if not b:
                break
            chunks.append(b)
            off += len(b)
        return b"".join(chunks)

    def _load(self) -> None:
        raw = self._read_all()
        end = raw.rfind(b"\n") + 1  # bytes after the last newline: a torn line
        if end < len(raw):
            os.ftruncate(self.fd, end)
            os.fsync(self.fd)
        header = None
        for line in raw[:end].split(b"\n")[:-1] if end else []:
            rec = _parse(line)
            if rec is None:
                self.bad_lines += 1
                continue
            if header is None:
                if rec.get("t") != "header":
                    self.bad_lines += 1
                    continue
                header = rec
                if rec.get("key") != self.key or \
                        canonical_json(rec.get("material")) != canonical_json(self.material):
                    # not this run's journal (cannot happen unless edited): start over
                    header = None
                    break
                continue
            t = rec.get("t")
            if t == "query" and isinstance(rec.get("q"), str) and isinstance(rec.get("out"), dict):
                self.queries.setdefault(rec["q"], rec)
            elif t == "fact" and isinstance(rec.get("n"), str) and isinstance(rec.get("f"), dict):
                self.facts[rec["n"]] = rec["f"]
        if header is None:
            self.queries.clear()
            self.facts.clear()
            os.ftruncate(self.fd, 0)
            self._write([{"t": "header", "schema": SCHEMA, "key": self.key,
                          "material": self.material}])

    def _write(self, records) -> None:
        data = b"".join(_line(r) for r in records)
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        os.fsync(self.fd)

    def append(self, records) -> None:
        if self.fd is None or not records:
            return
        with self._locked():
            self._write(records)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # -- queries -----------------------------------------------------------
    def lookup(self, qkey: str):
        """The recorded answer of a query (a :class:`~.queries.QueryOutcome`) or None."""
        from .queries import QueryOutcome
        rec = self.queries.get(qkey)
        if rec is None:
            return None
        o = rec["out"]
        try:
            out = QueryOutcome(rec["nid"], rec["sense"], o["verdict"], o["dual"], o["primal"],
                               o["point"], dict(o["stats"]))
        except (KeyError, TypeError):
            return None
        self.replayed += 1
        return out

    def finished(self, task, outcome) -> bool:
        """Is this answer final (may it be replayed on resume)?"""
        if outcome.verdict == "error":
            return False
        if outcome.verdict == "timeout":
            if task.time_limit != self.query_time_limit:
                return False  # cut short by the budget, not by --query-time-limit
            if task.deadline is not None and (self.query_time_limit is None or
                                              outcome.stats.get("time", 0.0) < 0.9 * self.query_time_limit):
                return False  # the budget's deadline may have cut it (or kept it from starting)
        return True

    def record(self, qkey: str, kind: str, outcome) -> None:
        self.executed += 1
        out = {"verdict": outcome.verdict, "dual": outcome.dual, "primal": outcome.primal,
               "point": outcome.point, "stats": outcome.stats}
        rec = {"t": "query", "q": qkey, "kind": kind, "nid": outcome.nid, "sense": outcome.sense,
               "out": out}
        if not _finite_json(rec):
            return  # a non-finite number: not replayable, redo it on resume
        rec = json.loads(_plain_json(rec))  # exactly what a reader gets back
        self.queries.setdefault(qkey, rec)
        self.append([rec])

    # -- whole solves (ISA) ------------------------------------------------
    def lookup_solve(self, qkey: str):
        from .backends import SolveResult
        rec = self.queries.get(qkey)
        if rec is None:
            return None
        o = rec["out"]
        try:
            res = SolveResult(o["status"], primal=o["primal"], dual=o["dual"],
                              x=None if o["x"] is None else np.array(o["x"], dtype=np.float64),
                              time=o["time"], nodes=o["nodes"], backend=o["backend"],
                              version=o["version"], sense=o["sense"], stopped_by=o["stopped_by"],
                              message=o["message"])
        except (KeyError, TypeError, ValueError):
            return None
        self.replayed += 1
        return res

    def record_solve(self, qkey: str, res, *, time_limit) -> None:
        self.executed += 1
        if res.status == "error" or (res.stopped_by == "time_limit"
                                     and time_limit != self.query_time_limit):
            return
        out = res.to_json()
        out["x"] = None if res.x is None else [float(v) for v in res.x]
        rec = {"t": "query", "q": qkey, "kind": "isa", "nid": None, "sense": res.sense, "out": out}
        if not _finite_json(rec):
            return
        rec = json.loads(_plain_json(rec))
        self.queries.setdefault(qkey, rec)
        self.append([rec])

    # -- facts -------------------------------------------------------------
    def record_facts(self, facts) -> None:
        """Append decided facts (NeuronFact objects) not recorded yet."""
        recs = []
        for f in facts:
            d = {"status": f.status, "evidence": f.evidence, "lower": f.lower, "upper": f.upper,
                 "witness_pos": f.witness_pos, "witness_neg": f.witness_neg}
            if not _finite_json(d):  # +-inf bounds: leave them out
                d["lower"] = d["lower"] if d["lower"] is None or math.isfinite(d["lower"]) else None
                d["upper"] = d["upper"] if d["upper"] is None or math.isfinite(d["upper"]) else None
            d = json.loads(_plain_json(d))
            self.facts[f.neuron] = d
            recs.append({"t": "fact", "n": f.neuron, "f": d})
        self.append(recs)

    def record_end(self, *, complete: bool, stopped) -> None:
        self.append([{"t": "end", "complete": bool(complete), "stopped": stopped}])


def _plain_json(obj) -> str:
    """Compact JSON keeping the key order (a replayed answer must dump like a fresh one)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_default)


def _line(rec: dict) -> bytes:
    body = {k: v for k, v in rec.items() if k != "sum"}
    body["sum"] = _sha(canonical_json(body))[:16]
    return (_plain_json(body) + "\n").encode("utf-8")


def _parse(line: bytes):
    try:
        rec = json.loads(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict):
        return None
    s = rec.pop("sum", None)
    try:
        if s != _sha(canonical_json(rec))[:16]:
            return None
    except (ValueError, TypeError):
        return None
    return rec


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_journal(path: str) -> list:
    """Every valid record of a journal file, in order (for tools and tests)."""
    out = []
    with open(path, "rb") as fh:
        raw = fh.read()
    end = raw.rfind(b"\n") + 1
    for line in raw[:end].split(b"\n")[:-1] if end else []:
        rec = _parse(line)
        if rec is not None:
            out.append(rec)
    return out
