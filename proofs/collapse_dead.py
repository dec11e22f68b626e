"""collapse_dead: a layer whose units are all stably inactive makes the rest constant.

Rule (leo_verify/passes/collapse.py + constants.py).  The ReLU layer R2 whose
units are all inactive is replaced by the constant 0 and constants are
propagated downstream (affine of a constant, ReLU of a constant, an add that
receives a zero loses that argument); what no longer reaches the output (the
layers before R2) is removed.

Chain.  y = W4 relu(W3 relu(W2 relu(W1 x + b1) + b2) + b3) + b4
         (R1 = relu(z1), R2 = relu(z2), R3 = relu(z3)).
Rewritten: the constant y0 = W4 relu(W3 0 + b3) + b4, computed downstream
from zeros; it mentions neither x nor W1, b1, W2, b2.

Residual.  r = relu(z2) + h1 (an add with h1 = relu(z1) as the bypass),
y_res = W4 relu(W3 r + b3) + b4.  Rewritten: the add loses its zero
argument, y_res' = W4 relu(W3 h1 + b3) + b4.

Theorem.  For all real W1..W4, b1..b4 and every x in R^n with

    z2_i = W2_i . relu(W1 x + b1) + b2_i <= 0   for every unit i of R2,

we have y(x) = y0 and y_res(x) = y_res'(x).  Nothing is assumed about R1, R3.

Dimensions: n = 2 inputs, every hidden layer 2 units, 2 outputs.

Why it generalises: relu(z2_i) = 0 for each unit (one scalar fact per unit),
so R2's output is the zero vector; everything downstream is a function of
that output (and, for the residual, of the untouched bypass), so it equals the
same function applied to 0 -- constant propagation evaluates exactly that.
Neither widths nor depth before or after R2 matter; the hypotheses are
pointwise (any domain).

Side checks: the hypotheses hold with strict signs, R1 units active and
W4 relu(b3) != W4 relu(W3 h + b3) for some h (not vacuous); mutants are sat:
one unit of R2 not known inactive, constant propagation that forgets the
downstream ReLU (y0 = W4 b3 + b4), and a residual add that drops both
arguments.
"""
from __future__ import annotations

import z3

from _proof import Check, affine, main_exit, mat, named, relu, run, vec

N, H, P = 2, 2, 2


def build():
    x = vec("x", N)
    w1, b1 = mat("W1", H, N), vec("b1", H)
    w2, b2 = mat("W2", H, H), vec("b2", H)
    w3, b3 = mat("W3", H, H), vec("b3", H)
    w4, b4 = mat("W4", P, H), vec("b4", P)
    zero = [z3.RealVal(0)] * H

    z1, d1 = named("z1", affine(w1, x, b1))
    h1 = [relu(t) for t in z1]
    z2, d2 = named("z2", affine(w2, h1, b2))
    h2 = [relu(t) for t in z2]
    z3c, d3 = named("z3", affine(w3, h2, b3))                       # chain
    y = affine(w4, [relu(t) for t in z3c], b4)
    y0 = affine(w4, [relu(t) for t in affine(w3, zero, b3)], b4)    # constant from zeros
    y0_bad = affine(w4, affine(w3, zero, b3), b4)                   # forgets R3

    r = [a + h for a, h in zip(h2, h1)]                              # residual add
    z3r, d3r = named("z3r", affine(w3, r, b3))
    y_res = affine(w4, [relu(t) for t in z3r], b4)
    z3s, d3s = named("z3s", affine(w3, h1, b3))                      # add lost its zero arg
    y_res2 = affine(w4, [relu(t) for t in z3s], b4)
    z3n, d3n = named("z3n", affine(w3, zero, b3))                    # add dropped entirely
    y_res_bad = affine(w4, [relu(t) for t in z3n], b4)

    defs = d1 + d2 + d3 + d3r + d3s + d3n
    same = lambda a, a2: z3.And([p == q for p, q in zip(a, a2)])
    hyps = [t <= 0 for t in z2]
    goal = z3.And(same(y, y0), same(y_res, y_res2))
    checks = [
        Check("non-vacuous: strict signs, R1 active, bypass changes the output",
              [t < 0 for t in z2] + [t > 0 for t in z1] + [z3.Not(same(y_res2, y0))], "sat"),
        Check("mutant: unit 0 of R2 not known inactive",
              hyps[1:] + [z3.Not(goal)], "sat"),
        Check("mutant: constant propagation forgets R3 (W4 b3 + b4)",
              hyps + [z3.Not(same(y, y0_bad))], "sat"),
        Check("mutant: residual add dropped entirely",
              hyps + [z3.Not(same(y_res, y_res_bad))], "sat"),
    ]
    return defs, hyps, goal, checks


if __name__ == "__main__":
    defs, hyps, goal, checks = build()
    main_exit(run(rule="collapse_dead", doc=__doc__, definitions=defs, hypotheses=hyps,
                  goal=goal, expected="unsat", checks=checks))
