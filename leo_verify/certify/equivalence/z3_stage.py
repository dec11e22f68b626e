"""Stage: z3 in exact rationals on the joint graph.
"""
from __future__ import annotations

from fractions import Fraction

from .context import _Ctx, _Decided
from .milp_stage import _canon


# -- stage: z3 ------------------------------------------------------------------------------

def _z3_stage(ctx: _Ctx, entry: dict, max_neurons: int, share_of_time: float):
    """Exact: is there ``x`` in the box with ``f(x)`` and ``g(x)`` differing (per mode)?

    Built on the canonical ids (:class:`Canon`): every distinct value is one z3
    term, every affine entry a named variable with its sound bounds, every
    unstable ReLU a named variable ``0 <= y <= u``, ``y == If(z > 0, z, 0)``.
    """
    import z3
    canon = _canon(ctx)
    fids, gids = canon.nets
    f_out, g_out = fids[ctx.f.output_name], gids[ctx.g.output_name]
    # only what the outputs depend on
    need, stack = set(), list(f_out) + list(g_out)
    while stack:
        c = stack.pop()
        if c in need:
            continue
        need.add(c)
        kind, payload = canon.defs[c]
        if kind == "aff":
            stack.extend(a for a, _ in payload[1])
        elif kind == "relu":
            stack.append(payload)
        elif kind == "add":
            stack.extend(payload)
    unstable = sum(1 for c in need if canon.kind(c) == "relu")
    same = f_out == g_out
    entry.update(unstable_neurons=unstable, shared_outputs=sum(a == b for a, b in zip(f_out, g_out)))
    if unstable > max_neurons and not same:
        return f"skipped: {unstable} distinct unstable neurons > {max_neurons}"
    if ctx.left() <= 0.05:
        return "skipped: out of time"

    def rv(q: Fraction):
        q = Fraction(q)
        return z3.RealVal(q.numerator) if q.denominator == 1 else z3.Q(q.numerator, q.denominator)

    def fl(v: float):
        return rv(Fraction(float(v)))

    solver = z3.Solver()
    zero = z3.RealVal(0)
    terms: dict = {}
    xs = []
    for c in sorted(need | set(range(1, 1 + ctx.box.size))):  # ids are topological
        kind, payload = canon.defs[c]
        lo, hi = canon.bounds[c]
        if kind == "zero":
            terms[c] = zero
        elif kind == "in":
            x = z3.Real(f"x{payload}")
            solver.add(x >= fl(lo), x <= fl(hi))
            terms[c] = x
            xs.append(x)
        elif kind == "aff":
            bias, ws = payload
            parts = [rv(w) * terms[a] for a, w in ws]
            if bias != 0 or not parts:
                parts.append(rv(bias))
            z = z3.Real(f"z{c}")
            solver.add(z == (z3.Sum(parts) if len(parts) > 1 else parts[0]), z >= fl(lo), z <= fl(hi))
            terms[c] = z
        elif kind == "relu":
            y = z3.Real(f"y{c}")
            z = terms[payload]
            solver.add(y >= 0, y <= fl(hi), y == z3.If(z > 0, z, zero))
            terms[c] = y
        else:  # add
            ts = [terms[a] for a in payload]
            terms[c] = z3.Sum(ts) if len(ts) > 1 else (ts[0] if ts else zero)
    fo = [terms[c] for c in f_out]
    go = [terms[c] for c in g_out]
    m = len(fo)
    if ctx.mode == "exact":
        claim = [a != b for a, b, ca, cb in zip(fo, go, f_out, g_out) if ca != cb]
    elif ctx.mode == "epsilon":
        e = rv(Fraction(ctx.epsilon))
        claim = [z3.Or(a - b > e, b - a > e) for a, b, ca, cb in zip(fo, go, f_out, g_out)
                 if ca != cb]
    else:
        def top(v, i):  # the first argmax of v is i
            return z3.And([v[i] > v[k] for k in range(i)] + [v[i] >= v[k] for k in range(i + 1, m)])
        claim = [] if same else \
            [z3.And(top(fo, i), top(go, j)) for i in range(m) for j in range(m) if i != j]
    solver.add(z3.Or(claim) if claim else z3.BoolVal(False))
    left = ctx.left() * share_of_time
    if left <= 0.05:
        return "skipped: out of time"
    solver.set("timeout", max(1, int(left * 1000)))
    entry["timeout"] = left
    ans = solver.check()
    entry["z3"] = str(ans)
    if ans == z3.unsat:
        what = {"exact": "f(x) == g(x) exactly",
                "epsilon": f"|f_i(x) - g_i(x)| <= {ctx.epsilon:g} exactly",
                "top1": "argmax f(x) == argmax g(x) (first index) exactly"}[ctx.mode]
        raise _Decided(ctx.result("equivalent", method="z3", proof="exact",
                                  reason=f"z3 (exact rationals): {what} for every x in the box"))
    if ans == z3.sat:
        model = solver.model()
        q = []
        for x in xs:
            v = model.eval(x, model_completion=True)
            q.append(Fraction(v.as_fraction()) if z3.is_rational_value(v) else Fraction(0))
        ctx.rational_candidate(q, "z3")
        return "sat model did not replay (discarded)"
    why = solver.reason_unknown()
    if "cancel" in why:  # z3 turns Ctrl-C into "unknown (canceled)"
        raise KeyboardInterrupt
    return f"z3 unknown ({why})"
