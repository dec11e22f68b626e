"""merge_rank: merging linearly dependent stably active units (LEO) preserves the outputs.

Rule (leo_verify/passes/merge.py, exact mode).  ``x -> A -> relu -> U`` with
``A = (W, b)``, ``W`` (m x n), user ``U = (V, c)``, ``V`` (p x m):
``y = V relu(W x + b) + c``.  For a basis ``B`` of active units and dependent
active units ``D`` whose *weight rows* satisfy ``W_D = K W_B`` (biases are
NOT required to be dependent), the pass rewrites the user as

    V'[:, B] = V[:, B] + V[:, D] K,
    c'       = c + V[:, D] (b_D - K b_B)          (the bias correction "shift"),

and deletes the units D (rows of A, columns of V):
``y' = V'[:, -D] relu(W[-D] x + b[-D]) + c'``.

Theorem.  For all real W, b, V, c, K with W_D = K W_B (as polynomial
equalities over the symbolic weights) and every x in R^n with

    W_i . x + b_i >= 0  for every i in B and every i in D    (stably active)

we have y'(x) = y(x).  Units outside B and D are unconstrained (unstable).

Dimensions: n = 3 inputs, m = 5 hidden units with B = {0, 1}, D = {2, 3}
(two dependents merged at once, as the pass does) and unit 4 unstable;
p = 2 outputs; K is 2 x 2.

Why it generalises: for d in D, relu(z_d) = z_d = W_d x + b_d
= K_d (z_B - b_B) + b_d = K_d relu(z_B) + (b_d - K_d b_B) using only the
activity of d and of the basis units j with K_dj != 0; so the term
V[:, d] relu(z_d) equals V[:, d] K_d relu(z_B) + V[:, d] shift_d, a per-dependent
identity whose contributions add up over D, in any dimension.  Every user
of the layer is rewritten the same way; later layers read y = y'.

Side checks: (1) stronger form, also unsat: basis units j only need
"z_j >= 0 or K[:, j] = 0" (covers the empty-basis case, where a dependent has
W_d = 0 and is a constant); (2) the paper's form (biases dependent too,
b_D = K b_B, and no bias correction) is unsat; (3) non-vacuous: the
hypotheses hold with strict activity, K and V[:, D] non-zero; mutants are
sat: (4) no bias correction, (5) a dependent not known active, (6) a basis
unit with K[:, j] != 0 not known active.
"""
from __future__ import annotations

import z3

from _proof import Check, affine, dot, main_exit, mat, named, relu, run, vec

N, M, P = 3, 5, 2
B, D = [0, 1], [2, 3]


def merge_user(v, c, b, k, basis, dep, *, shift=True):
    """merge.py's rewrite of one user ``(V, c)``; z3 terms or Fractions alike.

    ``V[:, basis] += V[:, dep] K``, ``c += V[:, dep] (b_dep - K b_basis)``
    (the bias correction; omitted with ``shift=False``), then the columns
    ``dep`` are deleted.  Returns ``(V', c', kept units)``.
    """
    keep = [i for i in range(len(v[0])) if i not in dep]
    corr = [b[d] - dot(k[r], [b[j] for j in basis]) for r, d in enumerate(dep)]
    v_new, c_new = [], []
    for vo, co in zip(v, c):
        row = list(vo)
        vd = [vo[d] for d in dep]
        for s_, j in enumerate(basis):
            row[j] = vo[j] + dot(vd, [k[r][s_] for r in range(len(dep))])
        v_new.append([row[i] for i in keep])
        c_new.append(co + dot(vd, corr) if shift else co)
    return v_new, c_new, keep


def build():
    x, w, b = vec("x", N), mat("W", M, N), vec("b", M)
    v, c = mat("V", P, M), vec("c", P)
    k = mat("K", len(D), len(B))
    z, defs = named("z", affine(w, x, b))          # z_i == W_i . x + b_i
    y = affine(v, [relu(zi) for zi in z], c)

    def merged(with_shift=True):
        v2, c2, keep = merge_user(v, c, b, k, B, D, shift=with_shift)
        return affine(v2, [relu(z[i]) for i in keep], c2)   # rows of A kept: z_keep

    # W_D = K W_B, entrywise (the dependency merge.py verifies exactly)
    dependent = [w[d][j] == dot(k[r], [w[i][j] for i in B]) for r, d in enumerate(D)
                 for j in range(N)]
    same = lambda a, a2: z3.And([p == q for p, q in zip(a, a2)])
    active_b = [z[j] >= 0 for j in B]
    active_d = [z[d] >= 0 for d in D]
    hyps = dependent + active_b + active_d
    goal = same(y, merged())
    weak_b = [z3.Or(z[j] >= 0, z3.And([k[r][s] == 0 for r in range(len(D))]))
              for s, j in enumerate(B)]
    bias_dep = [b[d] == dot(k[r], [b[j] for j in B]) for r, d in enumerate(D)]
    checks = [
        Check("stronger: basis unit j needs z_j >= 0 only if K[:,j] != 0",
              dependent + weak_b + active_d + [z3.Not(goal)], "unsat"),
        Check("paper's form: b_D = K b_B too, no bias correction",
              hyps + bias_dep + [z3.Not(same(y, merged(with_shift=False)))], "unsat"),
        Check("non-vacuous: strict activity, K != 0, V[:,D] != 0, b_D free",
              dependent + [z[i] > 0 for i in B + D] + [z[4] < 0]
              + [k[r][s] != 0 for r in range(len(D)) for s in range(len(B))]
              + [v[o][d] != 0 for o in range(P) for d in D]
              + [z3.Not(z3.And(bias_dep))], "sat"),
        Check("mutant: no bias correction (b_D not dependent)",
              hyps + [z3.Not(same(y, merged(with_shift=False)))], "sat"),
        Check("mutant: dependent unit 2 not known active",
              dependent + active_b + active_d[1:] + [z3.Not(goal)], "sat"),
        Check("mutant: basis unit 0 not known active",
              dependent + active_b[1:] + active_d + [z3.Not(goal)], "sat"),
    ]
    return defs, hyps, goal, checks


if __name__ == "__main__":
    defs, hyps, goal, checks = build()
    main_exit(run(rule="merge_rank", doc=__doc__, definitions=defs, hypotheses=hyps, goal=goal,
                  expected="unsat", checks=checks))
