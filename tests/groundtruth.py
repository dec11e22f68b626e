"""Ground truth for tiny networks: enumerate activation regions, one LP per region.

On a fixed activation pattern of all earlier ReLUs the network is affine in
x, so the maximum of a pre-activation over the box is the largest LP optimum
over the feasible regions.  Exponential: only for nets with a handful of
neurons.  Independent of leo_verify's analysis code (it uses scipy's LP).
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linprog

from leo_verify.analysis.witness import neuron_index


def _affine_forms(graph, pattern):
    """node -> (A, c) with value(x) = A x + c under the activation ``pattern``."""
    n = graph.input_size
    forms = {}
    for name, op in graph.items():
        args = graph.args(name)
        if op.kind == "input":
            forms[name] = (np.eye(n), np.zeros(n))
        elif op.kind == "affine":
            a, c = forms[args[0]]
            forms[name] = (op.weight @ a, op.weight @ c + op.bias)
        elif op.kind == "relu":
            a, c = forms[args[0]]
            mask = np.array([pattern.get(nid, 1) for nid in op.neurons], dtype=float)
            forms[name] = (a * mask[:, None], c * mask)
        elif op.kind == "add":
            forms[name] = (sum(forms[x][0] for x in args), sum(forms[x][1] for x in args))
        else:
            forms[name] = forms[args[0]]
    return forms


def extrema(graph, box):
    """neuron id -> (max, argmax, min, argmin) of its pre-activation over ``box``."""
    idx = neuron_index(graph)
    order = list(idx)  # topological
    bounds = list(zip(box.lower, box.upper))
    best = {nid: [-np.inf, None, np.inf, None] for nid in order}

    def lp(cvec, a_ub, b_ub, sense):
        res = linprog(-cvec if sense == "max" else cvec, A_ub=a_ub if len(a_ub) else None,
                      b_ub=b_ub if len(b_ub) else None, bounds=bounds, method="highs")
        if res.status != 0:
            return None, None
        return (-res.fun if sense == "max" else res.fun), res.x

    def rec(k, pattern, rows, rhs):
        if k == len(order):
            return
        nid = order[k]
        pre, row, _ = idx[nid]
        a, c = _affine_forms(graph, pattern)[pre]
        za, zc = a[row], c[row]
        for sense, slot in (("max", 0), ("min", 2)):
            v, x = lp(za, rows, rhs, sense)
            if v is None:
                continue
            v += zc
            if (sense == "max" and v > best[nid][0]) or (sense == "min" and v < best[nid][2]):
                best[nid][slot], best[nid][slot + 1] = v, x
        # branch on this neuron's phase: active z >= 0 (-z <= 0), inactive z <= 0
        for phase, (ga, gb) in ((1, (-za, zc)), (0, (za, -zc))):
            new_rows = rows + [ga]
            new_rhs = rhs + [gb]
            if lp(np.zeros(len(za)), new_rows, new_rhs, "max")[0] is None:
                continue
            rec(k + 1, {**pattern, nid: phase}, new_rows, new_rhs)

    rec(0, {}, [], [])
    return {nid: tuple(v) for nid, v in best.items()}


def abs_trick():
    """``z = relu(x) - relu(-x) - x + 1/1024 = 1/1024 > 0`` on ``[-1, 1]``: ``relu1[0]`` is
    stably active, but no relaxation over the whole box shows it (a split at 0 does)."""
    from leo_verify.graph import Add, Affine, Graph, Input, Output, Relu
    net = Graph(name="abs-trick")
    net.add("x", Input(1))
    net.add("fc0", Affine(np.array([[1.0], [-1.0]]), np.zeros(2)), ["x"])
    net.add("relu0", Relu(["relu0[0]", "relu0[1]"]), ["fc0"])
    net.add("fc1", Affine(np.array([[1.0, -1.0]]), np.array([2.0 ** -10])), ["relu0"])
    net.add("skip", Affine(np.array([[-1.0]]), np.zeros(1)), ["x"])
    net.add("z", Add(1), ["fc1", "skip"])
    net.add("relu1", Relu(["relu1[0]"]), ["z"])
    net.add("fc2", Affine(np.array([[1.0]]), np.zeros(1)), ["relu1"])
    net.add("y", Output(1), ["fc2"])
    return net.lint(where="test")
