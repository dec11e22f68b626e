"""Equivalence of any two networks over a box: ``check_equivalence(f, g, box, ...)``.

Three questions (``mode``):

``"epsilon"``  is ``|f_i(x) - g_i(x)| <= epsilon`` for every output ``i`` and every ``x``
               in the box?
``"exact"``    is ``f(x) == g(x)`` exactly, over the reals (the networks' weights are the
               exact rationals of their stored floats, or their ``Affine.exact`` rationals)?
``"top1"``     is ``argmax f(x) == argmax g(x)`` for every ``x``?  Tie convention: the
               argmax is the *first* index attaining the maximum (``numpy.argmax``), in
               exact arithmetic.
``"top1-confidence"`` (``epsilon`` is then ``delta``, VeryDiff's delta-top-1): wherever
               ``softmax(f(x))_c > delta`` (softmax of f's logits), is ``argmax g(x) = c``?
               Only the fuzzer and the differential prover run.

Output heads: the provers below work on the logits (the outputs before any
head); :func:`check_equivalence` turns the question about the head outputs into
checks of the logits (``top1`` sees through order-preserving heads, ``epsilon``
divides by the head's Lipschitz constant, see :func:`_check_with_heads`).

The check is a sequence of provers tried in order; each answers
``"equivalent"``, ``"counterexample"`` or nothing (unknown):

1. ``fuzz``: the falsification campaign of :mod:`.fuzz` (finds counterexamples only);
2. ``diff``: the differential prover (:mod:`.diff_stage`): forward and backward bounds of
   ``f - g`` on two aligned chains, input splitting, every leaf re-proved exactly; its
   split tree is the certificate ``recheck`` re-checks in the kernel;
3. the hook list ``provers`` (default :data:`STRUCTURAL_PROVERS`; before ``diff`` when
   ``accept_uncertified``);
4. ``bounds``: rigorous float bounds (interval + CROWN with outward rounding) of
   ``f - g`` on a joint graph (mode ``"epsilon"`` only);
5. ``milp`` and ``z3`` in a mode-dependent order:

   * ``"epsilon"``: MILP first (a floating-point proof: every dual bound of
     ``max/min (f_i - g_i)`` within ``epsilon`` minus a safety margin), then z3 on small
     networks;
   * ``"exact"`` / ``"top1"``: z3 first (an exact proof), then the MILP, which in
     ``"exact"`` mode can only find counterexamples, and in ``"top1"`` proves only when
     every pairwise margin is clear of 0 (rare: net-vs-itself comparisons touch ties).

   The MILP is ONE program with a shared input for both nets: a joint graph
   ``x -> f, x -> g, f - g`` (:func:`joint_graph`) encoded by
   :func:`leo_verify.analysis.milp.encode` with sound bounds.  z3 works in exact
   rationals: affine entries and post-activations are named variables with explicit
   sound bounds (``0 <= y <= u``, ``y == If(z > 0, z, 0)``); ReLUs proven stable by
   sound bounds are substituted (``0`` or ``z``).  z3 runs when at most
   ``z3_max_neurons`` distinct unstable ReLUs are left, or when the outputs are shared.

Sharing (:class:`Canon`): values that ``f`` and ``g`` compute identically (same
exact weights on the same canonical arguments, ignoring arguments proven 0 on the
box and the order of units) are computed once, in the MILP and in z3.  A network
compared with itself, a copy with dead neurons removed or units permuted
collapses to (nearly) nothing: ``f - g`` then has zero coefficients on every
shared value and the sound bounds alone prove it.  Whatever is not shared costs
one binary (one z3 ``If``) per unstable ReLU, and the joint MILP of two
unrelated copies is hard: measured on ACAS Xu 1_1 over prop_1's box, 494
binaries, dual bounds ~1000 after 12 s per query.

Certificates: by default ``"equivalent"`` is the verdict only when the proof leaves a
certificate the checker kernel re-checks (the ``diff`` split tree; see
:func:`.result.kernel_certificate`).  An exact proof without one -- z3's ``unsat``, the
structural bound, an ``epsilon`` proof through an output head -- gives ``"unknown"`` with
the proof in the reason, unless the caller passes ``accept_uncertified=True``.

Replay guard: no counterexample is reported unless it *replays*: the point
(clipped exactly into the box) is evaluated in float64 and in exact rationals
(:func:`leo_verify.semantics.evaluate_exact`), and the exact outputs must differ by
more than ``epsilon`` (``"exact"``: differ at all; ``"top1"``: exact argmaxes
differ).  A candidate that does not replay -- from the fuzzer, the MILP, z3 or a
hook -- is discarded (listed in ``CheckResult.discarded``) and the check goes on.

``time_limit`` is an overall deadline: the fuzzer gets at most a quarter of
it, hooks get the deadline, MILP queries a fair share each of what is left
(a second pass re-runs open queries if time remains), z3 all that is left
(60 % when the MILP still follows).  Running out gives ``"unknown"`` with the
reason.

Layout of the package, by stage: :mod:`.result` (:class:`CheckResult`, :func:`replay`),
:mod:`.joint` (sharing and the joint graph), :mod:`.context` (the running check),
:mod:`.fuzz_stage` (the fuzzer and the hook provers), :mod:`.milp_stage` (sound bounds and the
joint MILP), :mod:`.z3_stage` (z3), and this module (heads and the driver
:func:`check_equivalence`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from fractions import Fraction
from typing import Sequence

import numpy as np

from ...domain import Box
from ...errors import UsageError
from ...graph import Graph
from ...kernel.exact import fraction_str
from ..fuzz import check_sizes
from .context import _Ctx, _Decided, _stage
from .diff_stage import diff_stage
from .fuzz_stage import _fuzz_stage, _hook_stage, _prover_name
from .joint import Canon, joint_graph, widen_for_exact_weights
from .milp_stage import _bounds_stage, _milp_diff_stage, _milp_top1_stage
from .result import CheckResult, METHODS, MODES, UNCERTIFIED, kernel_certificate, replay, VERDICTS
from .z3_stage import _z3_stage


__all__ = ["check_equivalence", "CheckResult", "STRUCTURAL_PROVERS", "MODES", "replay",
           "joint_graph", "VERDICTS", "METHODS", "Canon", "widen_for_exact_weights"]


#: Exact structural provers tried after the fuzzer, in order.  Each is a callable
#: ``prover(f, g, box, mode, epsilon, deadline) -> CheckResult | None`` where
#: ``deadline`` is a :func:`time.monotonic` timestamp it must respect.  It returns
#: ``None`` (or a result with verdict ``"unknown"``) when it cannot decide, a
#: result with verdict ``"equivalent"`` (set ``method`` and ``proof``) when it
#: proves equivalence, or one with verdict ``"counterexample"`` whose
#: ``counterexample`` dict has ``"point_exact"`` (``"p/q"`` strings) or
#: ``"point"`` (floats): the point is replayed and discarded if it does not replay.
#: A hook's "equivalent" leaves no kernel certificate (see ``accept_uncertified``); a hook
#: with the attribute ``proves_only = True`` (it never returns a counterexample) is skipped
#: unless ``accept_uncertified``.
STRUCTURAL_PROVERS: list = []

#: Time policy (a fair share per stage, so no stage can starve the cheaper complete ones after it):
#: the fuzzer gets at most :data:`.fuzz_stage.FUZZ_SHARE` of the limit, the differential prover
#: ``DIFF_SHARE`` of what is left, each hook prover ``HOOK_SHARE`` of what is left then, the sound
#: bounds run once (cheap), MILP queries a fair share each, z3 what is left (60 % in the modes where
#: the MILP still follows).
DIFF_SHARE = 0.35
HOOK_SHARE = 0.5

#: z3 is tried when the networks have at most this many distinct unstable
#: neurons (after sharing identical sub-computations).
Z3_MAX_NEURONS = 60


# -- the entry point ---------------------------------------------------------------------------------

#: a float64 head output is within this much (times 1 + |value|) of the real one
#: (numpy's exp/log/tanh are accurate to a few ulps; this is ~10^7 ulps)
HEAD_FLOAT_MARGIN = 1e-9


_KEEP = object()


def _head_result(r: CheckResult, *, mode: str, epsilon: float, verdict: str | None = None,
                 reason: str = "", best_bound=_KEEP) -> CheckResult:
    """``r`` (a check of the logits) restated as the answer about the head outputs.
    ``best_bound``: a proven bound on the head outputs' difference (default: None unless
    ``r`` is a top-1 check, whose bound field is not printed)."""
    r.mode, r.epsilon = mode, float(epsilon)
    if best_bound is _KEEP:
        best_bound = r.best_bound if mode == "top1" else None
    if verdict is not None and verdict != r.verdict:
        r.verdict = verdict
        if verdict == "unknown":
            r.method = r.proof = None
            r.counterexample = None
    r.best_bound = best_bound
    r.reason = reason + ("; " if reason and r.reason else "") + r.reason
    return r


def _check_with_heads(f: Graph, g: Graph, box: Box, mode: str, epsilon: float, run) -> CheckResult:
    """The question about the *head outputs*, answered from checks of the logits.

    ``run(mode, epsilon)`` checks the logits.  What transfers (the proofs are in
    :mod:`leo_verify.heads`):

    * ``top1``: softmax, log-softmax, sigmoid, tanh (order-preserving) and argmax
      with first-index ties have the argmax of the logits, ties included:
      the logits' top-1 check is the answer.
    * different heads (``head_key``): not decided (equal logits do not give
      equal outputs): ``unknown`` with the reason.
    * ``exact``: equal logits give equal outputs; a logit counterexample is one
      for sigmoid / tanh (injective), for softmax / log-softmax when the logit
      difference is not the same at every output (they are invariant to a
      common shift, and only to it), for argmax as a top-1 check.
    * ``epsilon`` with a head of Lipschitz constant ``L``: the logits are checked
      with ``epsilon / L``; proven -> the head outputs are within ``epsilon``; a
      logit counterexample counts only when the head outputs, computed in
      float64 from the exact logits, differ by more than ``epsilon`` plus a
      float margin.  argmax: the indices are equal where the top-1 check proves it.
    """
    from ...heads import HEADS, apply_head
    fo, go = f.op(f.output_name), g.op(g.output_name)
    t0 = time.monotonic()

    def undecided(reason: str) -> CheckResult:
        return CheckResult("unknown", mode=mode, epsilon=epsilon, reason=reason,
                           time=time.monotonic() - t0)

    def transparent(o) -> bool:
        return o.head_key() != ("argmax", "last")

    heads = f"heads: A {fo.head_text()}, B {go.head_text()}"
    if mode in ("top1", "top1-confidence"):
        if not (transparent(fo) and transparent(go)):
            return undecided(f"{heads}: an ArgMax with select_last_index=1 resolves ties to the "
                             "last index; --top1 compares first-index argmaxes of the logits")
        r = run(mode, epsilon)
        return _head_result(r, mode=mode, epsilon=epsilon, reason=(
            f"{heads}: each preserves the argmax of the logits (ties included), so the logits "
            "were compared" + ("; the confidence is softmax of A's logits" if mode != "top1" else "")))
    if fo.head_key() != go.head_key():
        return undecided(f"the networks end with different output heads (A {fo.head_text()}, B "
                         f"{go.head_text()}): equal logits do not give equal outputs, and "
                         "outputs of different heads are not compared; not proven equivalent")
    head = fo.head
    attrs = dict(fo.head_attrs)
    if head == "argmax":
        if not transparent(fo):
            if mode == "exact":
                r = run("exact", epsilon)
                if r.verdict == "equivalent":
                    return _head_result(r, mode=mode, epsilon=epsilon,
                                        reason="argmax heads: the logits are equal")
                return _head_result(r, mode=mode, epsilon=epsilon, verdict="unknown", reason=(
                    "argmax heads with select_last_index=1: the logits are not proven equal, and "
                    "--top1 compares first-index argmaxes"))
            return undecided("argmax heads with select_last_index=1: --top1 compares first-index "
                             "argmaxes of the logits; not decided")
        r = run("top1", epsilon)
        note = "argmax heads (first index on ties): compared the argmax of the logits"
        if r.verdict == "counterexample" and mode == "epsilon":
            cex = r.counterexample
            if abs(cex["argmax_f"] - cex["argmax_g"]) <= epsilon:
                return _head_result(r, mode=mode, epsilon=epsilon, verdict="unknown", reason=(
                    note + f"; the argmaxes differ ({cex['argmax_f']} vs {cex['argmax_g']}) but by "
                    f"no more than epsilon"))
        return _head_result(r, mode=mode, epsilon=epsilon, reason=note)
    if mode == "exact":
        r = run("exact", epsilon)
        note = f"{head} heads: equal logits give equal outputs"
        if r.verdict == "counterexample" and head in ("softmax", "logsoftmax"):
            cex = r.counterexample
            diffs = {Fraction(a) - Fraction(b) for a, b in zip(cex["f_exact"], cex["g_exact"])}
            if len(diffs) <= 1:
                return _head_result(r, mode=mode, epsilon=epsilon, verdict="unknown", reason=(
                    note + f"; the logits differ at x by the same constant at every output, where "
                    f"the {head} outputs are equal: not decided"))
            note += f"; {head} outputs are equal only where the logits differ by a common constant"
        elif r.verdict == "counterexample":
            note += f"; {head} is injective, so the outputs differ where the logits do"
        return _head_result(r, mode=mode, epsilon=epsilon, reason=note)
    L = HEADS[head].lipschitz
    inner = float(Fraction(epsilon) / L)
    if Fraction(inner) > Fraction(epsilon) / L:  # round down: a proof must be of <= epsilon / L
        inner = float(np.nextafter(inner, 0.0))
    r = run("epsilon", inner)
    if r.verdict == "equivalent" and r.certificate is not None and r.certificate.get("mode") == "epsilon":
        # the kernel re-checks the logits at logit_epsilon and L * logit_epsilon <= epsilon itself
        r.certificate = {**r.certificate, "epsilon": fraction_str(Fraction(epsilon)),
                         "logit_epsilon": r.certificate["epsilon"]}
    note = (f"{head} heads (Lipschitz {L} in the infinity norm, leo_verify/heads.py): checked "
            f"|logits A - logits B| <= epsilon / {L} = {inner:.6g}")
    bound = None if r.best_bound is None else float(r.best_bound) * float(L)
    if r.verdict == "counterexample":
        cex = r.counterexample
        ef = np.array([float(Fraction(v)) for v in cex["f_exact"]])[None, :]
        eg = np.array([float(Fraction(v)) for v in cex["g_exact"]])[None, :]
        hf, hg = apply_head(head, attrs, ef)[0], apply_head(head, attrs, eg)[0]
        d = np.abs(hf - hg)
        k = int(np.argmax(d))
        margin = HEAD_FLOAT_MARGIN * (1 + max(abs(hf[k]), abs(hg[k])))
        cex.update(head=head, head_f=hf.tolist(), head_g=hg.tolist(), head_difference=float(d[k]),
                   head_output=k)
        if d[k] - margin > epsilon:
            return _head_result(r, mode=mode, epsilon=epsilon, best_bound=bound, reason=(
                note + f"; at the counterexample the {head} outputs differ by {d[k]:.6g} > epsilon "
                f"(output {k}, float64 from the exact logits, margin {margin:.1e})"))
        return _head_result(r, mode=mode, epsilon=epsilon, verdict="unknown", best_bound=bound,
                            reason=note + f"; the logits differ by more than epsilon / {L} at a "
                            f"point where the {head} outputs differ by only {d[k]:.6g}: not decided")
    return _head_result(r, mode=mode, epsilon=epsilon, best_bound=bound, reason=(
        note + (f", so |{head} A - {head} B| <= {L} * that = epsilon" if r.verdict == "equivalent"
                else "")))


def check_equivalence(f: Graph, g: Graph, box: Box, *, mode: str = "epsilon",
                      epsilon: float = 1e-6, time_limit: float = 60.0, solver: str = "scip",
                      seed: int = 0, provers: Sequence | None = None,
                      methods: Sequence[str] | None = None, fuzz_options: dict | None = None,
                      z3_max_neurons: int = Z3_MAX_NEURONS, share: bool = True, workers: int = 1,
                      accept_uncertified: bool = False) -> CheckResult:
    """Decide whether ``f`` and ``g`` agree on ``box`` (see the module docstring).

    Networks with output heads (:mod:`leo_verify.heads`) are compared on their
    head outputs, through checks of their logits: see :func:`_check_with_heads`.

    Parameters
    ----------
    f, g : networks with equal input and output sizes (else :class:`DataError`).
    box : the input box (:class:`DomainError` if its size is not the input size).
    mode : ``"epsilon"``, ``"exact"`` or ``"top1"``.
    epsilon : tolerance of mode ``"epsilon"`` (``>= 0``).
    time_limit : overall seconds; what is left goes to each stage in turn.
    solver : MILP backend, ``"scip"`` or ``"highs"``.
    seed : seeds the falsification campaign.
    provers : hook provers tried after the fuzzer (default :data:`STRUCTURAL_PROVERS`).
    methods : the stages to run, a subset of :data:`METHODS` (default: all);
        their order is fixed by the mode.  ``"structural"`` stands for the hook
        provers.  Leaving ``"fuzz"`` out lets the other provers find the
        counterexamples.
    fuzz_options : keyword arguments for :func:`.fuzz.falsify`.
    z3_max_neurons : z3 runs when there are at most this many distinct
        unstable neurons (or when ``f`` and ``g`` share all their terms).
    share : compute values ``f`` and ``g`` share once (see :class:`Canon`);
        ``False`` encodes two independent copies (for measurements).
    workers : processes for the differential prover's exact leaf re-proofs (1: inline).
    accept_uncertified : by default an ``"equivalent"`` verdict needs a certificate the checker
        kernel re-checks (:func:`.result.kernel_certificate`); an exact proof without one (z3,
        the structural bound, an epsilon proof through an output head) gives ``"unknown"`` with
        the proof in the reason.  ``True`` reports such proofs as ``"equivalent"``.

    Returns
    -------
    CheckResult
    """
    from ...analysis.backends import BACKENDS
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if solver not in BACKENDS:
        raise UsageError(f"solver must be one of {', '.join(BACKENDS)}, got {solver!r}")
    epsilon = float(epsilon)
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise UsageError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    time_limit = float(time_limit)
    if not (math.isfinite(time_limit) and time_limit > 0):
        raise UsageError(f"time limit must be > 0 seconds, got {time_limit!r}")
    check_sizes(f, g)
    box.check_size(f.input_size)
    methods = METHODS if methods is None else tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UsageError(f"unknown method {bad[0]!r}; choose from {', '.join(METHODS)}")
    if f.op(f.output_name).head != "none" or g.op(g.output_name).head != "none":
        def run(m: str, eps: float) -> CheckResult:
            return _check_logits(f, g, box, m, eps, time_limit, solver, seed, provers, methods,
                                 fuzz_options, z3_max_neurons, share, workers, hooks_first=accept_uncertified)
        result = _check_with_heads(f, g, box, mode, epsilon, run)
    else:
        result = _check_logits(f, g, box, mode, epsilon, time_limit, solver, seed, provers, methods,
                               fuzz_options, z3_max_neurons, share, workers, hooks_first=accept_uncertified)
    return result if accept_uncertified else _require_certificate(result, f, g)


def _require_certificate(result: CheckResult, f: Graph, g: Graph) -> CheckResult:
    """``result``, or UNKNOWN when it says "equivalent" without a kernel-checkable certificate."""
    if result.verdict != "equivalent" or kernel_certificate(result, f, g) is not None:
        return result
    return dataclasses.replace(
        result, verdict="unknown", method=None, proof=None, certificate=None,
        reason=(f"{result.method} proved the claim in exact arithmetic ({result.reason}), but that proof "
                f"{UNCERTIFIED}, so it is not reported as equivalent "
                "(--accept-uncertified / accept_uncertified=True accepts it)"))


def _check_logits(f, g, box, mode, epsilon, time_limit, solver, seed, provers, methods,
                  fuzz_options, z3_max_neurons, share, workers=1, *, hooks_first: bool = False) -> CheckResult:
    """:func:`check_equivalence` on the logits (the networks' outputs before any head).

    ``hooks_first``: the hook provers run before the differential prover (when their
    uncertified proofs are accepted, a cheap structural proof should not wait for it)."""
    ctx = _Ctx(f, g, box, mode, epsilon, time_limit, solver, seed)
    ctx.share = bool(share)
    # (stage name, method it belongs to, function)
    # top1-confidence: only the differential prover knows this property; it gets all the time
    # after the fuzzer, and no other stage follows
    confidence = mode == "top1-confidence"
    plan: list = [("fuzz", "fuzz", _fuzz_stage(dict(fuzz_options or {}))),
                  ("diff", "diff", diff_stage(1.0 if confidence else DIFF_SHARE, workers=workers))]
    if confidence:
        return _run_plan(ctx, [(name, fn) for name, method, fn in plan if method in methods])
    hooks = STRUCTURAL_PROVERS if provers is None else list(provers)
    # a hook that only ever proves (``proves_only``, like the structural prover) leaves no kernel
    # certificate: unless such proofs are accepted it cannot decide anything, and its time goes
    # to the stages that can still find a counterexample
    hooks = [p for p in hooks if hooks_first or not getattr(p, "proves_only", False)]
    hook_stages = [(_prover_name(p), "structural", _hook_stage(p, HOOK_SHARE)) for p in hooks]
    plan = plan[:1] + hook_stages + plan[1:] if hooks_first else plan + hook_stages
    if mode == "epsilon":
        plan += [("bounds", "bounds", _bounds_stage),
                 ("milp", "milp", _milp_diff_stage),
                 ("z3", "z3", lambda c, e: _z3_stage(c, e, z3_max_neurons, 1.0))]
    else:
        # z3 (the exact prover) first, leaving a share of the time to the
        # MILP, which can still find counterexamples
        plan += [("z3", "z3", lambda c, e: _z3_stage(c, e, z3_max_neurons, 0.6)),
                 ("milp", "milp", _milp_diff_stage if mode == "exact" else _milp_top1_stage)]
    plan = [(name, fn) for name, method, fn in plan if method in methods]
    return _run_plan(ctx, plan)


def _run_plan(ctx: _Ctx, plan: list) -> CheckResult:
    """Run the stages in order; the first decision (an exact proof or a replayed counterexample) wins."""
    float_only = []
    for name, fn in plan:
        if ctx.left() <= 0:
            ctx.stages.append({"stage": name, "outcome": "skipped: out of time", "time": 0.0})
            continue
        try:
            _stage(ctx, name, fn)
        except _Decided as d:
            if d.result.verdict == "equivalent" and d.result.proof != "exact":
                # exact answers only: a float bound (a MILP dual bound, outward-rounded float
                # bounds) is a strong hint, never a verdict
                ctx.stages[-1]["outcome"] = (f"float proof only ({d.result.proof}, not re-proved exactly): "
                                             f"{d.result.reason}")
                float_only.append(name)
                continue
            return d.result
    reasons = "; ".join(f"{s['stage']}: {s['outcome']}" for s in ctx.stages)
    timed_out = ctx.left() <= 0
    note = (f"{' and '.join(float_only)} found the claim true in floating point, which is not an exact "
            f"proof; " if float_only else "")
    return ctx.result("unknown", reason=note + ("time limit reached; " if timed_out else "") + reasons)
