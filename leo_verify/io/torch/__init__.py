"""PyTorch reader and writer.

Reading (:func:`from_torch`) traces the module with :func:`torch.fx.symbolic_trace`
and maps every fx node through a handler table (module type / function /
method name -> handler).  Semantics are the module's **eval-mode** semantics:

* ``nn.Linear`` -> one ``Affine`` node whose weights are the module's own
  (float32 -> float64 is exact).  Linear layers are never folded into each
  other or into a BatchNorm: composing affine maps in floating point rounds,
  and the graph must *be* the user's network.
* ``nn.BatchNorm1d`` -> its own diagonal ``Affine`` with, **by definition**,
  ``scale = gamma / sqrt(running_var + eps)`` and
  ``shift = beta - running_mean * scale``, both computed in float64 from the
  stored parameters.  (BatchNorm involves a square root, so no float network
  equals it exactly; this float64 affine map is the network leo_verify
  certifies.  It agrees with torch's own evaluation to rounding.)
* ``nn.ReLU`` / ``torch.relu`` / ``F.relu`` / ``.relu()`` -> ``Relu`` with
  neuron ids ``neuron_id(node, i)``.
* ``+`` / ``torch.add`` / ``.add()`` of two tensors -> ``Add``.
* an output head as the last operation: ``nn.Softmax`` / ``nn.LogSoftmax`` /
  ``F.softmax`` / ``F.log_softmax`` / ``torch.softmax`` / ``.softmax()`` (and
  log-) over the last dim, ``nn.Sigmoid`` / ``torch.sigmoid`` / ``.sigmoid()``,
  ``nn.Tanh`` / ``torch.tanh`` / ``.tanh()``, ``torch.argmax(dim=-1)`` /
  ``.argmax(dim=-1)``: the ``head`` of the :class:`~leo_verify.graph.Output`
  op (attributes in ONNX terms: ``axis``, ``keepdims``).  A head read by any
  other operation is an :class:`UnsupportedOp` naming its fx node.
* ``nn.Identity``, ``nn.Dropout`` (eval: identity), ``F.dropout(training=False)``,
  ``nn.Flatten`` / ``torch.flatten`` / ``.flatten()`` (a reshape that keeps
  the batch dimension: identity on the row-major flat vector) produce no node.

Anything else raises :class:`UnsupportedOp` naming the fx node.  Note that
fx records ``a += b`` as an out-of-place ``a + b``; eager torch mutates
``a``.  Explicit in-place ops (``inplace=True``, ``relu_``, ``add_``) are
accepted only when no later operation reads an alias of the mutated tensor.

Hostile files: :func:`load_torch_file` uses ``torch.load(weights_only=True)``
only (a pickle with a malicious ``__reduce__`` is refused, never run; no other
code path unpickles), refuses files over
:data:`leo_verify.io.limits.MAX_FILE_BYTES` before reading them and tensors
over :data:`~leo_verify.io.limits.MAX_ELEMENTS` (e.g. a stride-0 view of a
one-element storage declaring 10^12 elements) before copying them.

Writing: :func:`to_torch` builds an ``nn.Sequential`` for chains and a
:class:`LeoNetwork` for DAGs; :func:`save_torch` writes a chain MLP's state
dict; :func:`load_torch_file` reads one back with ``weights_only=True``.

Layout of the package: :mod:`.reader` (:func:`from_torch`), :mod:`.state_dict`
(:func:`load_torch_file`), :mod:`.writer` (:func:`to_torch`, :func:`save_torch`), :mod:`.common`.
"""
from __future__ import annotations

from .reader import from_torch
from .state_dict import load_torch_file
from .writer import ArgMax, LeoNetwork, Reshape, save_torch, to_torch

__all__ = ["from_torch", "load_torch_file", "to_torch", "save_torch", "LeoNetwork", "Reshape",
           "ArgMax"]
