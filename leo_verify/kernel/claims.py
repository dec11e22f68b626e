"""Re-check stored stability proofs from the network alone.

A *claim* is ``(neuron, direction)``: ``z <= 0`` on the domain (``inactive``)
or ``z >= 0`` (``active``), ``z`` the neuron's pre-activation.  Every check
here takes the claim from the certificate's claim record and asks whether the
stored proof proves *that* claim on *that* region:

``interval`` / ``lp-dual``
    exact interval bounds of the layer, tightened by the lemmas of this layer
    (each lemma's LP multipliers re-verified by weak duality,
    :func:`~.lp.bound_from_multipliers`), must show the claim; the record's
    ``bound`` must be a bound these prove.
``bab``
    a tree of ReLU phase splits on the layer's LP; the two children of a split
    are the two phases of an unfixed relaxed unit (they cover the parent); each
    leaf's multipliers prove the claim's bound (exactly the ``bound`` stated)
    or the branch infeasible.
``split``
    a tree of input-box halvings (children are the two closed halves at
    ``at``, which lies in the piece) or phase splits; each leaf proves the
    claim on its piece (empty, interval, LP dual, infeasible).
``crown-split``
    a per-layer tree of input pieces; a node that ``settles`` a neuron must
    show the neuron's claim on its piece with exact CROWN bounds
    (:func:`~.crown.crown_bounds`); a claim is proven when every root-to-leaf
    path settles it.
``pieces``
    a tree of input pieces, each carrying a full layered proof of its own;
    a piece counts for a neuron only if its own claim for the neuron has the
    *same direction* as the top-level claim and its proof checks on that piece.

Nothing is taken on trust: a malformed, mis-aimed or mis-directed proof
proves nothing (:class:`ProofInvalid` is raised inside and turned into
``False`` for that claim only).  Trees are walked iteratively.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Mapping

from ..graph import Graph
from .exact import ProofInvalid, Q, parse_rational
from .intervals import empty, node_bounds
from .lp import bound_from_multipliers, build_lp

__all__ = ["ProofInvalid", "holds", "split_children", "recheck_claims", "check_bab", "check_split_tree",
           "check_crown_tree", "check_piece_tree", "MAX_TREE_NODES"]

#: most nodes of one proof tree the kernel walks (honest trees: a few thousand)
MAX_TREE_NODES = 1_000_000


def holds(claim: str, lo: Fraction, hi: Fraction) -> bool:
    """Whether bounds ``lo <= z <= hi`` show ``claim`` (``z <= 0`` / ``z >= 0``)."""
    if claim == "inactive":
        return hi <= 0
    if claim == "active":
        return lo >= 0
    raise ProofInvalid(f"direction {claim!r} is not active/inactive")


def _rat(v) -> Fraction:
    return parse_rational(v)  # NotARational is a ProofInvalid


def _mult(m) -> dict:
    if not isinstance(m, dict):
        raise ProofInvalid("multipliers are not a mapping")
    return {int(k): _rat(v) for k, v in m.items()}


def split_children(split: Mapping, box: tuple, fix: Mapping) -> list:
    """The two children ``(box, fix)`` of a split node; they cover the parent exactly.

    ``input``: the closed halves ``x_d <= at`` and ``x_d >= at`` of ``box``
    (``at`` must lie in ``[lo_d, hi_d]``); ``relu``: the parent with the unit
    fixed ``active`` (first) and ``inactive`` (second).
    """
    kind = split.get("kind")
    if kind == "input":
        d, at = split.get("dim"), _rat(split.get("at"))
        lo, hi = list(box[0]), list(box[1])
        if not isinstance(d, int) or isinstance(d, bool) or not (0 <= d < len(lo)) or not (lo[d] <= at <= hi[d]):
            raise ProofInvalid(f"input split dim={d!r} at={at} outside the piece")
        left_hi, right_lo = list(hi), list(lo)
        left_hi[d] = right_lo[d] = at
        return [((lo, left_hi), fix), ((right_lo, hi), fix)]
    if kind == "relu":
        nid = split.get("neuron")
        if not isinstance(nid, str) or nid in fix:
            raise ProofInvalid(f"phase split on {nid!r}: not a free unit")
        return [(box, {**fix, nid: "active"}), (box, {**fix, nid: "inactive"})]
    raise ProofInvalid(f"split kind {kind!r}")


def _kids(node: dict) -> list:
    kids = node.get("children")
    if not isinstance(kids, list) or len(kids) != 2:
        raise ProofInvalid("a split needs exactly two children")
    return kids


def _leaf_bound(lp, z, claim: str, leaf: dict, fix: Mapping) -> bool:
    """An ``lp-dual`` leaf: its multipliers bound ``z`` on the branch; the stated
    ``bound`` must be exactly that bound, and it must show the claim."""
    sense = "max" if claim == "inactive" else "min"
    bound = bound_from_multipliers(lp, {z: 1}, sense=sense, multipliers=_mult(leaf.get("multipliers")), fix=fix)
    return bound == _rat(leaf.get("bound")) and holds(claim, bound, bound)


def _infeasible(lp, leaf: dict, fix: Mapping) -> bool:
    return bound_from_multipliers(lp, {}, sense="feasibility", multipliers=_mult(leaf.get("multipliers")),
                                  fix=fix) > 0


def check_bab(lp, tree: dict, z: int, claim: str) -> bool:
    """A ReLU branch-and-bound tree on the layer LP ``lp`` proves ``claim`` for variable ``z``."""
    stack, seen = [(tree, {})], 0
    while stack:
        node, fix = stack.pop()
        seen += 1
        if seen > MAX_TREE_NODES or not isinstance(node, dict):
            return False
        if "split" in node:
            split = node["split"]
            if not isinstance(split, dict) or split.get("kind") != "relu" or split.get("neuron") not in lp.units:
                return False
            for kid, (_, kfix) in zip(_kids(node), split_children(split, ((), ()), fix)):
                stack.append((kid, kfix))
            continue
        kind = node.get("proof")
        if kind == "infeasible":
            ok = _infeasible(lp, node, fix)
        elif kind == "lp-dual":
            ok = _leaf_bound(lp, z, claim, node, fix)
        else:
            ok = False
        if not ok:
            return False
    return True


def check_split_tree(graph: Graph, tree: dict, box: tuple, lemmas: Mapping, phase: Mapping, pre: str,
                     row: int, claim: str) -> bool:
    """An input/phase split tree proves ``claim`` for ``pre[row]`` on ``box``."""
    stack, seen = [(tree, box, {})], 0
    while stack:
        node, piece, fix = stack.pop()
        seen += 1
        if seen > MAX_TREE_NODES or not isinstance(node, dict):
            return False
        if "split" in node:
            split = node["split"]
            if not isinstance(split, dict):
                return False
            for kid, (kbox, kfix) in zip(_kids(node), split_children(split, piece, fix)):
                stack.append((kid, kbox, kfix))
            continue
        ph = {**phase, **fix}
        b = node_bounds(graph, piece, lemmas=lemmas, phase=ph, upto=pre)
        kind = node.get("proof")
        if kind == "empty":
            ok = empty(b)
        elif kind == "interval":
            ok = holds(claim, b[pre][0].fraction(row), b[pre][1].fraction(row))
        elif kind in ("infeasible", "lp-dual"):
            lp = build_lp(graph, piece, b, upto=pre, phase=ph)
            ok = _infeasible(lp, node, {}) if kind == "infeasible" else \
                _leaf_bound(lp, lp.node_vars[pre][row], claim, node, {})
        else:
            ok = False
        if not ok:
            return False
    return True


#: settle nodes of a piece tree whose exact bounds are computed in one batch
CROWN_BATCH = 32


def check_crown_tree(graph: Graph, box: tuple, tree: dict, pre: str, claims: Mapping[str, tuple[int, str]], *,
                     lemmas: Mapping, phase: Mapping) -> set:
    """The subset of ``claims`` (neuron -> (row of ``pre``, direction)) a piece tree proves on ``box``.

    A node's ``settles`` names neurons; the exact CROWN bound of the node's
    piece must show each one's claim *in the direction given here* (never one
    taken from the tree).  A cut ``at`` must lie strictly inside the piece.
    The tree is walked level by level; the settle nodes of a level are bounded
    in batches (:func:`~.crown.crown_bounds_many`: each row exactly its piece's bound).
    """
    from .crown import crown_bounds_many
    uncovered: set = set()
    level, seen = [(tree, list(box[0]), list(box[1]), set(claims))], 0
    while level:
        work = []
        for entry in level:
            node, lo, hi, pending = entry
            seen += 1
            if seen > MAX_TREE_NODES or not isinstance(node, dict):
                uncovered |= pending
                continue
            settles = node.get("settles", [])
            settles = ({n for n in settles if isinstance(n, str)} & pending) if isinstance(settles, list) else set()
            work.append((node, lo, hi, pending, settles))
        todo = [w for w in work if w[4]]
        for start in range(0, len(todo), CROWN_BATCH):
            chunk = todo[start:start + CROWN_BATCH]
            b = crown_bounds_many(graph, [(lo, hi) for _, lo, hi, _, _ in chunk], lemmas=lemmas, phase=phase,
                                  upto=pre, target_rows=[{claims[n][0] for n in st} for *_, st in chunk])
            blo, bhi = b[pre]
            for p, (_, _, _, pending, settles) in enumerate(chunk):
                pending -= {n for n in settles
                            if holds(claims[n][1], Fraction(int(blo.num[p, claims[n][0]]), blo.den),
                                     Fraction(int(bhi.num[p, claims[n][0]]), bhi.den))}
        level = []
        for node, lo, hi, pending, _ in work:
            if not pending:
                continue
            split, kids = node.get("split"), node.get("children")
            if not isinstance(split, dict) or not isinstance(kids, list) or len(kids) != 2:
                uncovered |= pending
                continue
            d, at = split.get("dim"), _rat(split.get("at"))
            if not isinstance(d, int) or isinstance(d, bool) or not (0 <= d < len(lo) and lo[d] < at < hi[d]):
                uncovered |= pending
                continue
            hi1, lo2 = list(hi), list(lo)
            hi1[d] = lo2[d] = at
            level.append((kids[0], lo, hi1, set(pending)))
            level.append((kids[1], lo2, hi, set(pending)))
    return set(claims) - uncovered


def check_piece_tree(graph: Graph, tree: dict, box: tuple, want: Mapping[str, str]) -> set:
    """The neurons of ``want`` (neuron -> direction) a ``pieces`` tree proves on ``box``.

    Each node's ``lower``/``upper`` must be exactly its piece (the root: ``box``;
    children: the halves at the node's cut).  A node proves a neuron only if
    the node lists it in ``proves``, its own claim record for it has the
    direction ``want`` gives, and that record's proof checks on the piece.
    The neuron is proven on ``box`` when every root-to-leaf path proves it.
    """
    # post-order: (node, box, pending) -> set proven on that box
    out: dict = {}
    stack = [(tree, (list(box[0]), list(box[1])), frozenset(want), 0, False)]
    seen = 0
    results: list = []
    while stack:
        node, piece, pending, depth, expanded = stack.pop()
        if not expanded:
            seen += 1
            if seen > MAX_TREE_NODES or not isinstance(node, dict):
                results.append(set())
                continue
            try:
                lo = [_rat(v) for v in node.get("lower", ())]
                hi = [_rat(v) for v in node.get("upper", ())]
            except ProofInvalid:
                results.append(set())
                continue
            if lo != list(piece[0]) or hi != list(piece[1]):
                results.append(set())
                continue
            claims = node.get("claims")
            own = {c.get("neuron"): c.get("claim") for c in claims if isinstance(c, dict)} \
                if isinstance(claims, list) else {}
            if not isinstance(claims, list) or len(own) != len(claims):
                results.append(set())
                continue
            if any(isinstance(c, dict) and c.get("method") in ("pieces", "crown-split") for c in claims):
                results.append(set())  # a piece's proof is layered only: no nested trees
                continue
            verdict = recheck_claims(graph, piece, claims, node.get("lemmas") or [])
            proves = node.get("proves") if isinstance(node.get("proves"), list) else []
            here = {n for n in proves if n in pending and verdict.get(n) is True and own.get(n) == want[n]}
            rest = pending - here
            split = node.get("split")
            if not rest or split is None:
                results.append(here)
                continue
            try:
                if not isinstance(split, dict):
                    raise ProofInvalid("split is not a mapping")
                kids = _kids(node)
                d, at = split.get("dim"), _rat(split.get("at"))
                if not isinstance(d, int) or isinstance(d, bool) or not (0 <= d < len(lo) and lo[d] < at < hi[d]):
                    raise ProofInvalid("cut outside the piece")
            except ProofInvalid:
                results.append(here)
                continue
            hi1, lo2 = list(hi), list(lo)
            hi1[d] = lo2[d] = at
            out[id(node)] = here
            stack.append((node, piece, pending, depth, True))
            stack.append((kids[1], (lo2, hi), frozenset(rest), depth + 1, False))
            stack.append((kids[0], (lo, hi1), frozenset(rest), depth + 1, False))
        else:
            left, right = results.pop(-2), results.pop()
            results.append(out.pop(id(node)) | (left & right))
    return results[-1] if results else set()


def _layers(graph: Graph):
    for relu, op in graph.relus():
        yield relu, op, graph.args(relu)[0]


def recheck_claims(graph: Graph, box: tuple, claims_json: list, lemmas_json: list, *,
                   trees: Mapping | None = None, pieces: dict | None = None) -> dict:
    """Re-verify stored claim proofs and lemmas on ``box`` (``(lo, hi)`` lists of Fractions).

    Returns ``{key: bool}``: neuron id -> its claim's proof checks; ``"lemma:<node>[<i>]:<side>"``
    -> the lemma checks (a failed lemma is not used); ``"trees:<node>"`` / ``"claims"`` ->
    the record is consistent.  Claims are checked layer by layer; a claim that
    checks fixes its unit's phase for the later layers.  Records that name no
    unit of the network, or name one twice, fail.
    """
    verdict: dict = {}
    if trees is None:
        trees = {}
    elif not isinstance(trees, Mapping):
        verdict["trees"] = False
        trees = {}
    where = {nid: (pre, i) for _, op, pre in _layers(graph) for i, nid in enumerate(op.neurons)}
    pres = {pre for _, _, pre in _layers(graph)}
    claims: dict = {}
    for c in claims_json:
        nid = c.get("neuron")
        if nid in claims or nid not in where:
            verdict["claims"] = False
            verdict[str(nid)] = False
            continue
        claims[nid] = c
    by_node: dict = {}
    for k, lem in enumerate(lemmas_json):
        node, i = lem.get("node"), lem.get("index")
        if node not in pres or not isinstance(i, int) or not 0 <= i < graph.size_of(node):
            verdict[f"lemma:{node}[{i}]:{lem.get('side')}"] = False
            continue
        by_node.setdefault(node, []).append(lem)
    for key in trees:
        if key not in pres:
            verdict[f"trees:{key}"] = False
    lemmas: dict = {}
    phase: dict = {}
    prefix: dict = {}
    for relu, op, pre in _layers(graph):
        b = node_bounds(graph, box, lemmas=lemmas, phase=phase, upto=pre, start=prefix)
        # the nodes before ``pre`` do not depend on this layer's lemmas and phases
        prefix = {n: v for n, v in b.items() if n != pre}
        lof, hif = list(b[pre][0].fractions()), list(b[pre][1].fractions())
        lp = None
        if by_node.get(pre) or any(claims.get(n, {}).get("method") == "bab" for n in op.neurons):
            lp = build_lp(graph, box, b, upto=pre, phase=phase)
        for lem in by_node.get(pre, []):
            i, side = lem["index"], lem.get("side")
            key = f"lemma:{pre}[{i}]:{side}"
            try:
                val = _rat(lem.get("value"))
                z = lp.node_vars[pre][i]
                if z is None or side not in ("upper", "lower"):
                    raise ProofInvalid("no variable / side")
                bound = bound_from_multipliers(lp, {z: 1}, sense="max" if side == "upper" else "min",
                                               multipliers=_mult(lem.get("multipliers")))
                ok = bound <= val if side == "upper" else bound >= val
            except ProofInvalid:
                ok = False
            if ok and side == "upper":
                hif[i] = min(hif[i], val)
            elif ok:
                lof[i] = max(lof[i], val)
            verdict[key] = verdict.get(key, True) and ok
        lemmas[pre] = (Q.of(lof), Q.of(hif))
        mine = {nid: c for nid, c in claims.items() if where[nid][0] == pre and c.get("status") == "proven"}
        by_tree: set = set()
        crown = {nid: (where[nid][1], c["claim"]) for nid, c in mine.items() if c.get("method") == "crown-split"}
        if crown or pre in trees:
            rec = trees.get(pre)
            recorded = rec.get("claims") if isinstance(rec, dict) else None
            # the record must name exactly this layer's crown-split claims, same rows and directions
            want_rec = {nid: [row, d] for nid, (row, d) in crown.items()}
            if not isinstance(rec, dict) or recorded != want_rec:
                verdict[f"trees:{pre}"] = False
            else:
                try:
                    by_tree = check_crown_tree(graph, box, rec.get("tree"), pre, crown, lemmas=lemmas, phase=phase)
                except ProofInvalid:
                    by_tree = set()
        layer_ok = {}
        for nid, c in mine.items():
            i, claim, method = where[nid][1], c.get("claim"), c.get("method")
            try:
                if method in ("interval", "lp-dual"):
                    bound = _rat(c.get("bound"))
                    # the stated bound must be one the checked bounds prove, and show the claim
                    ok = (hif[i] <= bound <= 0) if claim == "inactive" else (0 <= bound <= lof[i])
                    ok = ok and holds(claim, lof[i], hif[i])
                elif method in ("split", "bab", "crown-split", "pieces"):
                    if c.get("bound") != "0":
                        raise ProofInvalid("bound of a tree proof must be 0")
                    if method == "split" and isinstance(c.get("proof"), dict):
                        ok = check_split_tree(graph, c["proof"], box, lemmas, phase, pre, i, claim)
                    elif method == "bab" and isinstance(c.get("proof"), dict):
                        ok = check_bab(lp, c["proof"], lp.node_vars[pre][i], claim)
                    elif method == "crown-split":
                        ok = nid in by_tree
                    else:
                        ok = False  # "pieces": decided below, on the whole box, never used as a phase
                else:
                    ok = False
            except ProofInvalid:
                ok = False
            layer_ok[nid] = ok
        verdict.update(layer_ok)
        for nid, ok in layer_ok.items():
            if ok:
                phase[nid] = claims[nid]["claim"]
    by_pieces = {nid: c["claim"] for nid, c in claims.items()
                 if c.get("status") == "proven" and c.get("method") == "pieces"}
    if by_pieces:
        got = check_piece_tree(graph, pieces, box, by_pieces) if isinstance(pieces, dict) else set()
        for nid in by_pieces:
            verdict[nid] = nid in got
    return verdict
