"""Re-prove every stability claim in exact rational arithmetic, layer by layer.

For each ReLU layer, in graph order:

1. exact interval bounds of its pre-activations, under the bounds and phases
   already proven for earlier layers (:func:`~.intervals.node_bounds`);
2. a claim ``z <= 0`` (inactive) or ``z >= 0`` (active) that the interval
   does not settle gets an exact LP-dual certificate (:mod:`.lp`) on the
   triangle relaxation; the other units' bounds are tightened the same way
   (both sides), becoming *lemmas* for the later layers;
3. a claim the relaxation over the whole box cannot prove is split: the
   input box (at most :data:`INPUT_SPLIT_MAX` inputs) or an unstable earlier
   unit (``z >= 0`` / ``z <= 0``), each piece proven by interval, LP dual or
   infeasibility -- a tree of proofs whose leaves cover the domain.

Nothing is taken from the float analysis except *which* claims to prove.  A
claim that runs out of time or nodes stays ``open`` and its unit is treated
as unstable by every later proof.  The proof data (lemmas, multipliers,
trees) is JSON; the checker kernel (:func:`leo_verify.kernel.claims.recheck_claims`)
re-verifies it from the network alone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Mapping

import numpy as np

from ..domain import Box
from ..graph import Graph
from ..kernel.exact import Q, fraction_str, round_out
from ..kernel.intervals import empty, node_bounds
from .bab import ReluBranchAndBound
from ..kernel.claims import holds as _holds, split_children as _children
from .lp import build_lp, lp_bound

__all__ = ["ClaimProof", "ClaimsResult", "prove_claims", "proven_on_every_box", "INPUT_SPLIT_MAX"]

#: split the input box (rather than ReLU phases) when there are at most this many inputs
INPUT_SPLIT_MAX = 16
#: deepest input split (a side halved this often is far below any useful width)
_MAX_DEPTH = 60
_BITS = 40


@dataclass
class ClaimProof:
    """The proof (or not) of one stability claim."""

    neuron: str
    claim: str  # "active" | "inactive"
    status: str = "open"  # "proven" | "open"
    method: str = ""  # "interval" | "lp-dual" | "split"
    bound: str | None = None  # the proven bound on z (upper for inactive, lower for active)
    time: float = 0.0
    nodes: int = 0
    proof: dict | None = None
    reason: str = ""

    def to_json(self) -> dict:
        return {"neuron": self.neuron, "claim": self.claim, "status": self.status,
                "method": self.method, "bound": self.bound, "nodes": self.nodes,
                "reason": self.reason, "proof": self.proof}


@dataclass
class ClaimsResult:
    proofs: dict  # neuron id -> ClaimProof
    lemmas: list = field(default_factory=list)  # JSON lemma records, in order
    bounds: dict = field(default_factory=dict)  # node -> (lo Q, hi Q): final proven bounds
    lemma_bounds: dict = field(default_factory=dict)  # pre-activation node -> (lo Q, hi Q) lemmas
    phase: dict = field(default_factory=dict)  # neuron id -> proven phase
    trees: dict = field(default_factory=dict)  # pre-activation node -> piece tree (method "crown-split")

    @property
    def proven(self) -> dict:
        return {n: p.claim for n, p in self.proofs.items() if p.status == "proven"}


def proven_on_every_box(results: list, claims: Mapping[str, str]) -> dict:
    """The ``claims`` (neuron -> direction) proven, in that direction, by every one of
    ``results`` (one :class:`ClaimsResult` per box of a union): a unit is stable on a
    union only if it is stable the same way on each box."""
    return {n: c for n, c in claims.items()
            if all(r.proofs.get(n) is not None and r.proofs[n].status == "proven" and r.proofs[n].claim == c
                   for r in results)}


def _layers(graph: Graph):
    for relu, op in graph.relus():
        yield relu, op, graph.args(relu)[0]


def _sensitivity(graph: Graph, pre: str, row: int, phase: Mapping) -> np.ndarray:
    """|d z / d x| upper estimate ignoring ReLU states (a branching heuristic only)."""
    sens = {pre: np.eye(graph.size_of(pre))[row]}
    for name in reversed(graph.nodes()):
        s = sens.pop(name, None)
        if s is None:
            continue
        op = graph.op(name)
        if op.kind == "input":
            return s
        args = graph.args(name)
        if op.kind == "affine":
            contrib = [(args[0], np.abs(op.weight).T @ s)]
        elif op.kind == "relu":
            mask = np.array([0.0 if phase.get(n) == "inactive" else 1.0 for n in op.neurons])
            contrib = [(args[0], s * mask)]
        else:
            contrib = [(a, s) for a in args]
        for a, c in contrib:
            sens[a] = sens[a] + c if a in sens else c
    return np.ones(graph.input_size)


class _Search:
    """Branch and bound for one claim; every leaf is an exact proof."""

    def __init__(self, graph, lemmas, phase, pre, row, claim, *, deadline, max_nodes):
        self.graph, self.lemmas, self.phase = graph, lemmas, phase
        self.pre, self.row, self.claim = pre, row, claim
        self.deadline, self.max_nodes = deadline, max_nodes
        self.nodes = 0
        self.split_inputs = graph.input_size <= INPUT_SPLIT_MAX
        self.sens = _sensitivity(graph, pre, row, phase) if self.split_inputs else None
        self.reason = ""

    def leaf(self, box, fix) -> tuple[dict | None, object]:
        """Try to close one node; returns (proof or None, last LP dual info)."""
        ph = {**self.phase, **fix}
        b = node_bounds(self.graph, box, lemmas=self.lemmas, phase=ph, upto=self.pre)
        if empty(b):
            return {"proof": "empty"}, None
        lo, hi = b[self.pre]
        if _holds(self.claim, lo.fraction(self.row), hi.fraction(self.row)):
            return {"proof": "interval"}, None
        lp = build_lp(self.graph, box, b, upto=self.pre, phase=ph)
        z = lp.node_vars[self.pre][self.row]
        sense = "max" if self.claim == "inactive" else "min"
        db = lp_bound(lp, {z: 1}, sense=sense,
                      time_limit=max(0.1, min(10.0, self.deadline - time.monotonic())))
        if db.kind == "infeasible":
            return {"proof": "infeasible", "multipliers": db.multipliers}, None
        if db.bound is not None and _holds(self.claim, db.bound, db.bound):
            return {"proof": "lp-dual", "multipliers": db.multipliers,
                    "bound": fraction_str(db.bound)}, None
        return None, (lp, db, b)

    def prove(self, box, fix, info=None, depth: int = 0) -> dict | None:
        self.nodes += 1
        if depth > _MAX_DEPTH:
            self.reason = f"depth limit {_MAX_DEPTH}"
            return None
        if self.nodes > self.max_nodes:
            self.reason = f"node limit {self.max_nodes}"
            return None
        if time.monotonic() > self.deadline:
            self.reason = "time limit"
            return None
        if info is None:
            done, info = self.leaf(box, fix)
            if done is not None:
                return done
        lp, db, b = info
        split = self._choose(box, fix, lp, db, b)
        if split is None:
            self.reason = "nothing left to split"
            return None
        kids = []
        for child_box, child_fix in _children(split, box, fix):
            sub = self.prove(child_box, child_fix, depth=depth + 1)
            if sub is None:
                return None
            kids.append(sub)
        return {"split": split, "children": kids}

    def _choose(self, box, fix, lp, db, b) -> dict | None:
        if self.split_inputs:
            widths = np.array([float(h - l) for l, h in zip(*box)])
            score = self.sens * widths
            d = int(np.argmax(score))
            if score[d] <= 0:
                return None
            mid = (box[0][d] + box[1][d]) / 2
            return {"kind": "input", "dim": d, "at": fraction_str(mid)}
        # the unit whose relaxation the LP optimum exploits most: y* - max(z*, 0),
        # then the largest triangle (ties, or no solution)
        best, best_score = None, (0.0, 0.0)
        x = db.x if db is not None else None
        for row, (nid, gap, y, z) in lp.tri_rows.items():
            if nid in fix:
                continue
            slack = float(x[y] - max(x[z], 0.0)) if x is not None else 0.0
            score = (round(slack, 12), gap)
            if score > best_score:
                best, best_score = nid, score
        return None if best is None else {"kind": "relu", "neuron": best}


def _tighten(lp, zs, i, lo_i, hi_i, want_lo, want_hi):
    """LP-dual bounds of unit ``i`` (both sides as asked); returns (lo, hi, lemma proofs)."""
    proofs = {}
    if want_hi:
        db = lp_bound(lp, {zs[i]: 1}, sense="max")
        if db.bound is not None and db.bound < hi_i:
            hi_i = round_out(db.bound, up=True, bits=_BITS)
            proofs["upper"] = (hi_i, db.multipliers)
    if want_lo:
        db = lp_bound(lp, {zs[i]: 1}, sense="min")
        if db.bound is not None and db.bound > lo_i:
            lo_i = round_out(db.bound, up=False, bits=_BITS)
            proofs["lower"] = (lo_i, db.multipliers)
    return lo_i, hi_i, proofs


def prove_claims(graph: Graph, box: Box, claims: Mapping[str, str], *, time_limit: float = 30.0,
                 max_nodes: int = 2000, tighten: bool | None = None,
                 progress: Callable | None = None, deadline: float | None = None,
                 input_split: bool = True, crown_budget: float = 0.0,
                 crown_pieces: int = 2000, crown_root: bool = True, crown_pool=None) -> ClaimsResult:
    """Prove each claim (neuron id -> ``"active"``/``"inactive"``) over ``box`` exactly.

    Parameters
    ----------
    time_limit : seconds per claim that needs branching.
    max_nodes : branch-and-bound nodes per claim.
    tighten : tighten the bounds of undecided units with LP duals (lemmas for
        later layers; costs two LPs per unit).  Default: only when the exact CROWN
        pass (``crown_root``) is off; with it the lemmas cost more than they prove
        (784-256x4-10, ball 0.03: 880 of 880 claims in 27 s without them, 879 in 41 s
        with them).
    progress : called with the number of claims finished after each layer.
    deadline : a ``time.monotonic()`` value; claims not reached by then stay open.
    input_split : after branch and bound fails, try splitting the input box per
        claim (networks with at most :data:`INPUT_SPLIT_MAX` inputs).
    crown_budget : seconds (in all) for proving each layer's remaining claims
        on pieces of the box with exact CROWN bounds
        (:mod:`.crown_split`; networks with at most :data:`INPUT_SPLIT_MAX`
        inputs), tried before branch and bound.  0 turns it off.
    crown_pieces : at most this many pieces per layer.
    crown_pool : a :class:`~.crown_split.PiecePool`: the exact bounds of the pieces run on it.
    crown_root : networks with more than :data:`INPUT_SPLIT_MAX` inputs: first bound
        each layer by exact CROWN on the whole box (one back-substitution per layer
        proves the claims the float analysis proved by symbolic bounds; a tree of
        one node, method ``"crown-split"``), then LP duals for what it leaves.
        Measured on a 784-256x4-10 MNIST net (L-inf ball 0.03): 867 of 880 claims in
        ~7 s, where one LP per claim took ~100 s.
    """
    box_q = box.exact_bounds()
    lemmas: dict = {}
    phase: dict = {}
    out = ClaimsResult({})
    last_layer = graph.relus()[-1][0] if graph.relus() else None
    crown_end = time.monotonic() + crown_budget
    n_layers = len(graph.relus())
    use_crown_root = crown_root and graph.input_size > INPUT_SPLIT_MAX
    if tighten is None:
        tighten = not use_crown_root
    prefix: dict = {}
    for k, (relu, op, pre) in enumerate(_layers(graph)):
        b = node_bounds(graph, box_q, lemmas=lemmas, phase=phase, upto=pre, start=prefix)
        # the nodes before ``pre`` do not depend on this layer's lemmas and phases
        prefix = {n: v for n, v in b.items() if n != pre}
        lo, hi = b[pre]
        lof, hif = list(lo.fractions()), list(hi.fractions())
        lp = None
        failed = []
        if use_crown_root and (deadline is None or time.monotonic() < deadline):
            _crown_root(graph, box, pre, op, claims, lof, hif, lemmas, phase, out)
        for i, nid in enumerate(op.neurons):
            claim = claims.get(nid)
            t0 = time.monotonic()
            if nid in out.proofs:
                continue  # proven on the whole box by exact CROWN
            if claim is not None and _holds(claim, lof[i], hif[i]):
                out.proofs[nid] = ClaimProof(nid, claim, "proven", "interval",
                                             fraction_str(hif[i] if claim == "inactive" else lof[i]))
                continue
            if deadline is not None and t0 >= deadline:
                # past the deadline only the (cheap) interval proofs above are taken
                if claim is not None:
                    out.proofs[nid] = ClaimProof(nid, claim, "open", reason="overall deadline")
                continue
            if claim is None and (not tighten or relu == last_layer or lof[i] >= 0 or hif[i] <= 0):
                continue
            if lp is None:
                lp = build_lp(graph, box_q, b, upto=pre, phase=phase)
            zs = lp.node_vars[pre]
            want_hi = claim != "active"
            want_lo = claim != "inactive"
            lof[i], hif[i], lem = _tighten(lp, zs, i, lof[i], hif[i], want_lo, want_hi)
            for side, (val, mult) in lem.items():
                out.lemmas.append({"node": pre, "index": i, "side": side, "value": fraction_str(val),
                                   "multipliers": mult})
            if claim is None:
                continue
            if _holds(claim, lof[i], hif[i]):
                out.proofs[nid] = ClaimProof(nid, claim, "proven", "lp-dual",
                                             fraction_str(hif[i] if claim == "inactive" else lof[i]),
                                             time=time.monotonic() - t0, nodes=1)
            else:
                failed.append((i, nid, claim))
        lemmas[pre] = (Q.of(lof), Q.of(hif))
        def bab(i, nid, claim, seconds, nodes_max):
            t0 = time.monotonic()
            search = ReluBranchAndBound(lp, {lp.node_vars[pre][i]: 1},
                                        sense="max" if claim == "inactive" else "min",
                                        deadline=t0 + seconds, max_nodes=nodes_max)
            tree = search.prove()
            return tree, search, time.monotonic() - t0

        if failed and crown_budget > 0 and graph.input_size <= INPUT_SPLIT_MAX:
            # how far the relaxation is from each claim, relative to the unit's range
            gap = {nid: float((hif[i] if claim == "inactive" else -lof[i]) / max(hif[i] - lof[i], Fraction(1, 10 ** 9)))
                   for i, nid, claim in failed}
            failed = _crown_layer(graph, box, pre, failed, lemmas, phase, out, crown_pieces, bab, gap,
                                  pool=crown_pool,
                                  deadline=time.monotonic() + max(0.0, crown_end - time.monotonic())
                                  / (n_layers - k))
        for i, nid, claim in failed:
            t0 = time.monotonic()
            if deadline is not None and t0 >= deadline:
                out.proofs[nid] = ClaimProof(nid, claim, "open", reason="overall deadline")
                continue
            if deadline is not None:
                time_limit = min(time_limit, deadline - t0)
            # branch on the relaxed units of the layer's LP (one model, bound
            # changes only); with few inputs, fall back to splitting the box
            method = "bab"
            tree, search, _ = bab(i, nid, claim, time_limit, max_nodes)
            reason = f"bab: {search.reason}"
            nodes = search.nodes
            if tree is None and input_split and graph.input_size <= INPUT_SPLIT_MAX:
                method = "split"
                search = _Search(graph, lemmas, phase, pre, i, claim,
                                 deadline=t0 + 2 * time_limit, max_nodes=max_nodes)
                tree = search.prove(box_q, {})
                reason += f"; split: {search.reason}"
                nodes += search.nodes
            proof = ClaimProof(nid, claim, "proven" if tree else "open", method if tree else "",
                               "0" if tree else None, time=time.monotonic() - t0, nodes=nodes,
                               proof=tree, reason="" if tree else reason)
            out.proofs[nid] = proof
        for nid, p in out.proofs.items():
            if p.status == "proven" and nid in op.neurons:
                phase[nid] = p.claim
        if progress is not None:
            progress(sum(1 for n in op.neurons if n in claims))
    out.bounds = node_bounds(graph, box_q, lemmas=lemmas, phase=phase)
    out.lemma_bounds = dict(lemmas)
    out.phase = dict(phase)
    for nid, claim in claims.items():
        if nid not in out.proofs:
            out.proofs[nid] = ClaimProof(nid, claim, "open", reason="neuron not in the network")
    return out


def _crown_root(graph, box, pre, op, claims, lof, hif, lemmas, phase, out) -> None:
    """Prove the layer's claims that the interval bounds leave open with one exact CROWN
    bound of the whole box (a one-node crown-split tree, re-checked by the kernel)."""
    from .crown_split import prove_layer_by_pieces
    todo = {nid: (i, claims[nid]) for i, nid in enumerate(op.neurons)
            if nid in claims and not _holds(claims[nid], lof[i], hif[i])}
    if not todo:
        return
    t0 = time.monotonic()
    tree, proven, stats = prove_layer_by_pieces(graph, box, pre, todo, lemmas=lemmas, phase=phase,
                                                deadline=float("inf"), max_pieces=1)
    if not proven:
        return
    # one node: the split the prover queued (and never worked on) proves nothing
    out.trees[pre] = {"claims": {n: list(todo[n]) for n in sorted(proven)},
                      "tree": {"settles": tree["settles"]}, "pieces": 1}
    dt = time.monotonic() - t0
    for nid in proven:
        out.proofs[nid] = ClaimProof(nid, todo[nid][1], "proven", "crown-split", "0", time=dt / len(proven),
                                     nodes=1)


#: the piece prover pauses after this many pieces of a layer and lets branch and
#: bound try the claims still open (at most :data:`_QUICK_BAB_SECONDS` each, and in
#: all half as long as the pieces took so far), those whose relaxation is closest
#: first: on small boxes the LP relaxation is tight and a few ReLU splits beat
#: thousands of pieces (ACAS Xu 1_1/prop_3: 54 s -> 14 s); on large boxes the
#: pieces win and branch and bound must not eat their budget.  Batched exact pieces
#: are ~4x cheaper than when the pause came after 128 (the same time now buys 512):
#: prop_3 10.7 s -> 4.8 s (a claim bab proves in 0.55 s, which the earlier pause had no
#: budget left for), prop_1 14.3 s -> 14.9 s
_QUICK_BAB_AFTER = 512
_QUICK_BAB_SECONDS = 2.0


def _crown_layer(graph, box, pre, failed, lemmas, phase, out, max_pieces, bab, gap, *, deadline, pool=None):
    """Prove a layer's failed claims on pieces with exact CROWN (and, at a pause, brief
    branch and bound); returns those still failing."""
    from .crown_split import prove_layer_by_pieces
    t0 = time.monotonic()
    claims = {nid: (i, claim) for i, nid, claim in failed}

    def interlude(pending: set) -> set:
        done = set()
        stop = min(deadline, time.monotonic() + max(0.25, (time.monotonic() - t0) / 2))
        for nid in sorted(pending, key=lambda n: (gap[n], n)):
            if time.monotonic() >= stop:
                break
            i, claim = claims[nid]
            tree, search, dt = bab(i, nid, claim, max(0.0, min(_QUICK_BAB_SECONDS, stop - time.monotonic())),
                                   2000)
            if tree is None:
                # the claims closest to their relaxation come first: when one fails, the
                # rest rarely succeed (ACAS Xu 1_1/prop_1: 3 of 3 failed, 6.6 s of 60)
                break
            out.proofs[nid] = ClaimProof(nid, claim, "proven", "bab", "0", time=dt, nodes=search.nodes,
                                         proof=tree)
            done.add(nid)
        return done

    tree, proven, stats = prove_layer_by_pieces(graph, box, pre, claims, lemmas=lemmas, phase=phase,
                                                deadline=deadline, max_pieces=max_pieces,
                                                interlude=interlude, interlude_at=_QUICK_BAB_AFTER, pool=pool)
    if proven:
        out.trees[pre] = {"claims": {n: list(claims[n]) for n in sorted(proven)}, "tree": tree,
                          "pieces": stats["pieces"]}
    dt = time.monotonic() - t0
    for nid in proven:
        out.proofs[nid] = ClaimProof(nid, claims[nid][1], "proven", "crown-split", "0", time=dt / len(claims),
                                     nodes=stats["pieces"])
    return [(i, nid, c) for i, nid, c in failed if nid not in proven and nid not in stats["elsewhere"]]
