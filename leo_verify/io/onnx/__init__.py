"""ONNX reader and writer.

Reader
------
The reader traces the ONNX graph symbolically.  Every tensor is either

* a **constant** numpy array (initializers, ``Constant`` nodes, shape ops
  applied to constants), or
* a **pending affine value** :class:`_Pending` ``(src, W, b, shape)``:
  ``flat(tensor) = W @ value(src) + b`` where ``src`` is a node of the
  :class:`~leo_verify.graph.Graph` being built.

Linear ONNX ops (MatMul, Gemm, Add/Sub/Mul/Div by a constant, shape ops,
BatchNormalization) are composed into the pending value; a ``Relu`` (or the
graph output, or a residual ``Add``) *materializes* it as an ``Affine`` node.

Exactness rule.  This is a verification tool: the loaded graph must compute
exactly the network the file describes.  Composing two affine maps in
float64 rounds, so a linear op ``(M, c)`` is composed into ``(W, b)`` only
when the result is exact:

* ``M @ W`` is exact when ``W`` is a partial permutation (each row and column
  holds at most one non-zero, equal to 1.0) or ``M`` is a row selection;
* ``M @ b + c`` is exact when ``b == 0`` (it is ``c``) or when ``M`` is a row
  selection and ``c == 0`` (it is a selection of ``b``).

Otherwise the pending value is first materialized as its own ``Affine`` node.
For example ``Sub(mean) -> MatMul -> Add`` becomes two affine nodes when the
mean is non-zero, one when it is zero; ``Gemm(transB=1)`` with a bias is one.

Two ops cannot be represented exactly by float64 weights: ``Div`` by a
constant that is not a power of two (its weight ``1/d`` becomes an ``Affine``
with exact rational weights, see :meth:`Affine.from_rational`), and
``BatchNormalization``, whose ``gamma / sqrt(var + eps)`` is irrational in
general: it is folded in float64 and *that* affine map is, by definition, the
network we verify.

Hostile and malformed files
---------------------------
Every problem is one :class:`ModelFormatError` (exit 5), :class:`UnsupportedOp`
(6) or :class:`GraphError` (7) naming the file and, where it applies, the
node, tensor or value; nothing else escapes (``tests/test_fuzz_readers.py``
fuzzes this).  In order:

1. files over :data:`leo_verify.io.limits.MAX_FILE_BYTES` are refused before
   they are read; undecodable / truncated bytes are refused;
2. *before* ``onnx.checker`` or numpy sees a tensor (:func:`_prevalidate`):
   tensors stored as **external data** are refused, anywhere in the model
   (initializers, Constant attributes, subgraphs, functions).  External data
   is not supported at all, wherever it points (``../secret``, an absolute
   path, a symlink leaving the folder, or a file next to the model): the
   model is parsed from bytes (``onnx.load_model_from_string``, which never
   loads external data) and no external file is ever opened.  Declared
   tensor shapes with negative dims or more than
   :data:`~leo_verify.io.limits.MAX_ELEMENTS` elements (computed with Python
   integers, so overflowing int64 products are caught) are refused without
   allocating; names that are not UTF-8, dangling inputs, cycles and nodes out
   of topological order are named;
3. ``onnx.checker.check_model`` (schema, attribute and arity checks);
4. while tracing: network values larger than
   :data:`~leo_verify.io.limits.MAX_VALUE_SIZE`, dense matrices larger than
   ``MAX_ELEMENTS`` and exact-rational matrices larger than
   :data:`~leo_verify.io.limits.MAX_RATIONAL_ENTRIES` are refused before they
   are built, and so is a model whose matrices, rational entries or ReLU units
   add up to more than ``MAX_TOTAL_ELEMENTS``, ``MAX_TOTAL_RATIONAL_ENTRIES``
   or ``MAX_NEURONS`` (a tiny file repeating ``Mul`` by a scalar and ``Relu``
   would otherwise build n x n matrices without end); numpy's arithmetic
   warnings are silenced (non-finite weights are reported by
   :meth:`Graph.lint`).

Writer
------
:func:`to_onnx_model` emits ``input [batch, n] -> Gemm(transB=1) / Relu / Add
-> Identity -> output [batch, m]`` at opset 13 by default; with the source's
input/output names and shapes (``graph.metadata["io"]``) it keeps them, with a
leading ``Flatten``/``Reshape`` and a trailing ``Reshape`` where the layout
needs them, and ends with the output head instead of the ``Identity`` when the
network has one (see :func:`to_onnx_model`).

Output heads: ``Softmax``, ``LogSoftmax``, ``Sigmoid``, ``Tanh`` and ``ArgMax``
are read only as the last operation (followed by nothing but ``Identity``),
over the last axis of a tensor whose other dims are 1 (the logits of one
sample); they become the ``head`` of the :class:`~leo_verify.graph.Output`
op.  A head anywhere else is an :class:`UnsupportedOp` naming its node.

Layout of the package: :mod:`.values` (symbolic values, size limits, exact constant arithmetic),
:mod:`.checks` (prevalidation, cycles, dims), :mod:`.ops` (the op table: one handler per op type),
:mod:`.tracer` (walks the nodes), :mod:`.reader` (:func:`load_onnx`, :func:`graph_from_onnx_model`),
:mod:`.writer` (:func:`to_onnx_model`, :func:`save_onnx`).
"""
from __future__ import annotations

from .ops import HEAD_ATTRIBUTES, SUPPORTED_OPS, head_axis_default  # noqa: F401
from .reader import graph_from_onnx_model, load_onnx
from .writer import save_onnx, to_onnx_model

__all__ = ["load_onnx", "graph_from_onnx_model", "save_onnx", "to_onnx_model", "SUPPORTED_OPS"]
