"""Hostile and malformed inputs (issue 7): a hypothesis fuzz suite over the readers.

Every reader (ONNX, ``.nnet``, VNNLIB, JSON domains, PyTorch state dicts) is
driven with mutated and generated inputs.  The contract checked everywhere:

* only leo_verify's documented errors (subclasses of :class:`LeoError`, each
  with an exit code of :data:`EXIT_CODES`) escape -- any other exception
  (IndexError, KeyError, DecodeError, RecursionError, MemoryError, onnx's
  errors, a bare ValueError...) fails the test, and so does any *warning*
  (it would be a second line on stderr);
* messages are one line;
* each example finishes quickly (hypothesis ``deadline``; ``pytest-timeout``
  catches real hangs);
* through the CLI: exactly one line ``leo-verify: error: ...`` naming the
  file, the documented exit code, no traceback.

Also: external ONNX data is refused without opening any file (proved with an
audit hook *and* inotify in a subprocess), malicious pickles are refused
without running (the payload would create a file), and no ``pickle`` /
``np.load(allow_pickle=True)`` / ``torch.load(weights_only=False)`` is
reachable from the package.

Scale up locally with ``LEO_FUZZ_SCALE=10`` (examples x 10) and
``LEO_FUZZ_RANDOM=1`` (fresh random seeds instead of the fixed ones CI uses).
"""
from __future__ import annotations

import ast
import importlib.util
import io
import json
import math
import os
import pickle
import subprocess
import sys
import time
import warnings
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from leo_verify import cli
from leo_verify.domain import Box, load_domains
from leo_verify.errors import (EXIT_CODES, DomainError, GraphError, InputFileError, LeoError,
                               ModelFormatError, UnsupportedOp)
from leo_verify.io import limits
from leo_verify.io.nnet import load_nnet
from leo_verify.io.onnx import SUPPORTED_OPS, graph_from_onnx_model, load_onnx
from leo_verify.io.torch import load_torch_file
from leo_verify.io.vnnlib import parse_vnnlib

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "data" / "broken"

_spec = importlib.util.spec_from_file_location("make_broken", BROKEN / "make_broken.py")
make_broken = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_broken)

SCALE = max(1, int(os.environ.get("LEO_FUZZ_SCALE", "1")))
RANDOM = bool(os.environ.get("LEO_FUZZ_RANDOM"))


def fuzz(n: int):
    """Hypothesis settings: n examples (x LEO_FUZZ_SCALE), generous per-example deadline."""
    return settings(max_examples=n * SCALE, deadline=timedelta(seconds=10), derandomize=not RANDOM,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


pytestmark = pytest.mark.timeout(300)


def only_leo_errors(allowed, fn, *args, **kwargs):
    """Run ``fn``; return its result or the LeoError it raised.

    Any other exception propagates (a failure); warnings are errors too.  A
    LeoError must be one of ``allowed``, carry a documented exit code and a
    one-line message.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return fn(*args, **kwargs)
        except LeoError as exc:
            assert isinstance(exc, allowed), f"{type(exc).__name__} not in {allowed}: {exc}"
            assert exc.exit_code in EXIT_CODES
            text = str(exc)
            assert text and "\n" not in text, repr(text)
            return exc


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# ===========================================================================
# ONNX
# ===========================================================================
ONNX_ERRORS = (ModelFormatError, UnsupportedOp, GraphError)


def _f32(a, name):
    return numpy_helper.from_array(np.asarray(a, np.float32), name)


def rich_model() -> onnx.ModelProto:
    """A valid model using many supported ops (the tracer's paths), for byte mutations."""
    rng = np.random.default_rng(1)

    def q(*shape):
        return np.round(rng.normal(size=shape) * 8) / 8
    inits = [_f32(q(6, 6), "G"), _f32(q(6), "gb"), _f32(np.ones(6), "gamma"),
             _f32(np.zeros(6), "beta"), _f32(q(6) / 4, "mean"), _f32(np.ones(6) * 3, "var"),
             numpy_helper.from_array(np.array([1, 2, 3], np.int64), "shp"),
             _f32([3.0], "three"), _f32(q(6, 2), "W"), _f32([0.5, -0.25], "bias"),
             numpy_helper.from_array(np.array([0], np.int64), "ax")]
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "G", "gb"], ["gemm"], name="gemm", transB=1, alpha=2.0),
        helper.make_node("BatchNormalization", ["gemm", "gamma", "beta", "mean", "var"], ["bn"],
                         name="bn", epsilon=1.0),
        helper.make_node("Relu", ["bn"], ["relu"], name="relu"),
        helper.make_node("Reshape", ["relu", "shp"], ["r3"], name="reshape"),
        helper.make_node("Transpose", ["r3"], ["tr"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("Squeeze", ["tr", "ax"], ["sq"], name="squeeze"),
        helper.make_node("Div", ["sq", "three"], ["dv"], name="div"),
        helper.make_node("Flatten", ["dv"], ["fl2"], name="flatten2", axis=0),
        helper.make_node("Identity", ["fl2"], ["id"], name="identity"),
        helper.make_node("MatMul", ["id", "W"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "bias"], ["pre"], name="add"),
        helper.make_node("Relu", ["pre"], ["output"], name="relu_out"),
    ]
    g = helper.make_graph(
        nodes, "rich", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


VALID_ONNX = {"mlp": make_broken.build_mlp().SerializeToString(),
              "rich": rich_model().SerializeToString()}


def test_reference_models_load():
    for blob in VALID_ONNX.values():
        graph_from_onnx_model(blob)


@st.composite
def mutated_bytes(draw, blobs: dict):
    blob = bytearray(blobs[draw(st.sampled_from(sorted(blobs)))])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "flip", "overwrite", "delete", "insert"]))
        n = len(blob)
        if n == 0:
            break
        pos = draw(st.integers(0, n - 1))
        if kind == "truncate":
            blob = blob[:pos]
        elif kind == "flip":
            blob[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            blob[pos:pos + len(chunk)] = chunk
        elif kind == "delete":
            del blob[pos:pos + draw(st.integers(1, 16))]
        else:
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(blob)


@fuzz(200)
@given(blob=mutated_bytes(VALID_ONNX))
def test_onnx_mutated_bytes(blob):
    only_leo_errors(ONNX_ERRORS, graph_from_onnx_model, blob, source="fuzz.onnx")


# -- generated graphs ----------------------------------------------------------
_VALUES = st.one_of(st.floats(-4, 4, width=32),
                    st.sampled_from([0.0, 1.0, 0.5, 3.0, -2.0, math.nan, math.inf, -math.inf,
                                     1e-45, 3e38]))
_DTYPES = ["f32", "f32", "f32", "f64", "i64", "i64", "f16", "bf16", "bool", "str", "u8"]
_HOSTILE_TENSOR = [None] * 40 + ["short_raw", "no_data", "huge", "overflow", "external"]


@st.composite
def tensors(draw, name: str) -> TensorProto:
    kind = draw(st.sampled_from(_DTYPES))
    dims = draw(st.lists(st.sampled_from([1, 2, 3, 4, 6, 0]), max_size=3))
    n = math.prod(dims)
    if kind == "i64":
        vals = draw(st.lists(st.integers(-2, 6), min_size=n, max_size=n))
        t = numpy_helper.from_array(np.array(vals, np.int64).reshape(dims), name)
    elif kind == "str":
        t = TensorProto(name=name, dims=dims, data_type=TensorProto.STRING)
        t.string_data.extend([b"s"] * n)
    elif kind == "bool":
        t = numpy_helper.from_array(np.zeros(dims, bool), name)
    elif kind == "u8":
        t = numpy_helper.from_array(np.ones(dims, np.uint8), name)
    else:
        vals = np.array(draw(st.lists(_VALUES, min_size=n, max_size=n)), np.float32).reshape(dims)
        if kind == "bf16":
            t = TensorProto(name=name, dims=dims, data_type=TensorProto.BFLOAT16)
            t.raw_data = (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            dt = {"f32": np.float32, "f64": np.float64, "f16": np.float16}[kind]
            with np.errstate(all="ignore"):
                t = numpy_helper.from_array(vals.astype(dt), name)
    hostile = draw(st.sampled_from(_HOSTILE_TENSOR))
    if hostile == "short_raw" and t.raw_data:
        t.raw_data = t.raw_data[:-1]
    elif hostile == "no_data":
        for f in ("raw_data", "float_data", "int64_data", "string_data", "double_data"):
            t.ClearField(f)
    elif hostile == "huge":
        del t.dims[:]
        t.dims.extend([10**6, 10**6])
    elif hostile == "overflow":
        del t.dims[:]
        t.dims.extend([2**62, 2**62, 4])
    elif hostile == "external":
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", draw(st.sampled_from(["../secret", "/etc/passwd", "w.bin"]))
    return t


_OPS = list(SUPPORTED_OPS) * 3 + ["Sigmoid", "Conv", "If", "Softmax", "NoSuchOp", "Max"]
_ARITY = {"MatMul": (2, 2), "Gemm": (2, 3), "Add": (2, 2), "Sub": (2, 2), "Mul": (2, 2),
          "Div": (2, 2), "Relu": (1, 1), "Flatten": (1, 1), "Reshape": (2, 2), "Squeeze": (1, 2),
          "Unsqueeze": (1, 2), "Transpose": (1, 1), "Identity": (1, 1), "Dropout": (1, 3),
          "BatchNormalization": (5, 5), "Constant": (0, 0), "Shape": (1, 1), "Cast": (1, 1),
          "Concat": (1, 3), "Gather": (2, 2)}
_FATTR = st.one_of(st.floats(-3, 3), st.sampled_from([0.0, 1.0, math.nan, math.inf, 1e-300, 1e300]))
_AXES = st.lists(st.integers(-3, 3), min_size=1, max_size=3)
_ATTRS = {
    "Gemm": {"transA": st.integers(0, 1), "transB": st.integers(0, 1), "alpha": _FATTR,
             "beta": _FATTR},
    "Flatten": {"axis": st.integers(-4, 4)},
    "Transpose": {"perm": st.lists(st.integers(-1, 3), min_size=1, max_size=4)},
    "Concat": {"axis": st.integers(-3, 3)},
    "Gather": {"axis": st.integers(-3, 3)},
    "Cast": {"to": st.sampled_from([1, 11, 7, 10, 16, 9, 2, 8, 0, 999])},
    "Squeeze": {"axes": _AXES},
    "Unsqueeze": {"axes": _AXES},
    "Reshape": {"allowzero": st.integers(0, 1)},
    "BatchNormalization": {"epsilon": _FATTR, "training_mode": st.integers(0, 1),
                           "spatial": st.integers(0, 1)},
    "Shape": {"start": st.integers(-3, 3), "end": st.integers(-3, 3)},
    "Dropout": {"ratio": st.floats(0, 1)},
}
def _rare(n: int):
    """True about once in ``n`` draws (hypothesis favours small integers, so no integers())."""
    return st.sampled_from([False] * (n - 1) + [True])


_REQUIRED_ATTRS = {("Cast", "to"), ("Concat", "axis")}
_DIM = st.one_of(st.sampled_from([1, 1, 2, 3, 4, 6]),
                 st.sampled_from([0, -1, "N", 10**7, 2**40, 2**62]))


def _fitting_inits():
    """Constants whose shapes fit a [1, 4] input, so that many generated graphs get far."""
    rng = np.random.default_rng(0)
    return [_f32(np.round(rng.normal(size=(4, 4)) * 4) / 4, "w44"), _f32([0.5, -1, 2, 0], "b4"),
            _f32(3.0, "s"), numpy_helper.from_array(np.array([1, 4], np.int64), "shape14"),
            numpy_helper.from_array(np.array([0], np.int64), "ax0"),
            _f32(np.ones(4), "ones4"), _f32(np.zeros(4), "zeros4")]


@st.composite
def onnx_models(draw) -> bytes:
    fitting = _fitting_inits()
    inits = [t for t in fitting if draw(st.booleans())]
    pool = ["input"] + [t.name for t in inits]
    for k in range(draw(st.integers(0, 3))):
        name = f"c{k}"
        inits.append(draw(tensors(name)))
        pool.append(name)
    nodes = []
    n_nodes = draw(st.integers(1, 6))
    for k in range(n_nodes):
        op = draw(st.sampled_from(_OPS))
        lo, hi = _ARITY.get(op, (1, 2))
        ins = []
        for _ in range(draw(st.integers(lo, hi))):
            # mostly recent values (chains), rarely: empty, dangling, self-loop, produced later
            ins.append(draw(st.sampled_from(["", "ghost", f"t{k}", f"t{k + 1}"])) if draw(_rare(30))
                       else draw(st.sampled_from(pool[-2:] + pool)))
        attrs = {}
        for key, strat in _ATTRS.get(op, {}).items():
            if (op, key) in _REQUIRED_ATTRS or draw(_rare(3)):
                attrs[key] = draw(strat)
        if op == "Constant":
            which = draw(st.sampled_from(["value", "value_float", "value_ints", "value_string"]))
            attrs[which] = draw({"value": tensors("const"), "value_float": _FATTR,
                                 "value_ints": st.lists(st.integers(-3, 6), min_size=1, max_size=4),
                                 "value_string": st.just("x")}[which])
        if draw(_rare(40)):
            attrs["bogus"] = 1
        outs = [f"t{k}"] + ([f"m{k}"] if op == "Dropout" and draw(st.booleans()) else [])
        name = draw(st.sampled_from([f"n{k}"] * 8 + ["", "input", "x" * 300]))
        nodes.append(helper.make_node(op, ins, outs, name=name, **attrs))
        pool.append(f"t{k}")
    out_name = draw(st.sampled_from(pool + ["zz"])) if draw(_rare(20)) else f"t{n_nodes - 1}"
    in_type = draw(st.sampled_from([TensorProto.FLOAT] * 8 + [TensorProto.DOUBLE, TensorProto.INT64,
                                                              TensorProto.FLOAT16]))
    in_shape = draw(st.sampled_from([[1, 4]] * 6 + [["N", 4], [4], [1, 2, 2], [1, 2, 3]])
                    if not draw(_rare(10)) else st.lists(_DIM, max_size=4))
    out_shape = draw(st.sampled_from([[1, 4], ["N", 4], [4], [1, 1], [1, 2, 2]])
                     if not draw(_rare(10)) else st.one_of(st.none(), st.lists(_DIM, max_size=3)))
    out_type = draw(st.sampled_from([TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.DOUBLE]))
    vin = helper.make_tensor_value_info("input", in_type, in_shape)
    vout = helper.make_tensor_value_info(out_name, out_type, out_shape)
    for vi, shape in ((vin, in_shape), (vout, out_shape)):
        if shape is not None:
            vi.type.tensor_type.shape.SetInParent()  # a scalar [] still declares a shape
    g = helper.make_graph(nodes, "fuzz", [vin], [vout], initializer=inits)
    opset = draw(st.sampled_from([13, 13, 13, 7, 9, 11, 17, 21]))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset <= 17 else 10
    return m.SerializeToString()


@fuzz(300)
@given(blob=onnx_models())
def test_onnx_generated_graphs(blob):
    res = only_leo_errors(ONNX_ERRORS, graph_from_onnx_model, blob, source="gen.onnx")
    if not isinstance(res, LeoError):
        assert res.input_size <= limits.MAX_VALUE_SIZE


# -- specific hostile models -------------------------------------------------------
def _mlp(**kw) -> onnx.ModelProto:
    return make_broken.build_mlp(**kw)


def _set_init(m, k, t):
    m.graph.initializer[k].CopyFrom(t)
    return m


def _raw(name, dtype, dims, raw=None):
    t = TensorProto(name=name, data_type=dtype, dims=dims)
    if raw is not None:
        t.raw_data = raw
    return t


def _with_input_dims(dims):
    m = _mlp()
    shape = m.graph.input[0].type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dd = shape.dim.add()
        if isinstance(d, int):
            dd.dim_value = d
        else:
            dd.dim_param = d
    return m


def _rewire(k, pos, name):
    m = _mlp()
    m.graph.node[k].input[pos] = name
    return m


def _reordered():
    m = _mlp()
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes[::-1])
    return m


def _single_op(op, inits, in_shape, out_shape, **attrs):
    ins = ["input"] + [t.name for t in inits]
    g = helper.make_graph([helper.make_node(op, ins, ["output"], name="op")], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _bad_utf8_name():
    blob = _mlp().SerializeToString()
    return blob.replace(b"relu1", b"rel\xb1u", 1)  # same length: still a valid protobuf


def _sparse():
    m = _mlp()
    sp = helper.make_sparse_tensor(_f32([1.0], "vals"),
                                   numpy_helper.from_array(np.array([0], np.int64), "idx"), [4, 8])
    sp.values.name = "S"
    m.graph.sparse_initializer.append(sp)
    return m


def _subgraph_external():
    """An If node whose branch holds an external-data initializer."""
    t = _raw("E", TensorProto.FLOAT, [1])
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="/etc/passwd")
    branch = helper.make_graph([helper.make_node("Identity", ["E"], ["o"])], "b", [],
                               [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])],
                               initializer=[t])
    m = _mlp()
    m.graph.node.append(helper.make_node("If", ["cond"], ["unused"], then_branch=branch,
                                         else_branch=branch))
    return m


HOSTILE_ONNX = {
    "huge_no_data": (lambda: _set_init(_mlp(), 0, _raw("W1", 1, [10**6, 10**6])),
                     ModelFormatError, "MAX_ELEMENTS"),
    "huge_short_raw": (lambda: _set_init(_mlp(), 0, _raw("W1", 1, [10**6, 10**6], b"\0" * 64)),
                       ModelFormatError, "MAX_ELEMENTS"),
    "dims_overflow_int64": (lambda: _set_init(_mlp(), 0, _raw("W1", 1, [2**62, 2**62, 4], b"")),
                            ModelFormatError, "MAX_ELEMENTS"),
    "negative_dims": (lambda: _set_init(_mlp(), 0, _raw("W1", 1, [-4, -8], b"\0" * 128)),
                      ModelFormatError, "negative dimension"),
    "raw_too_short": (lambda: _set_init(_mlp(), 0, _raw("W1", 1, [4, 8], b"\0" * 12)),
                      ModelFormatError, "W1"),
    "int64_weight": (lambda: _set_init(_mlp(), 0, numpy_helper.from_array(
        np.ones((4, 8), np.int64), "W1")), ModelFormatError, "dtype int64"),
    "string_weight": (lambda: _set_init(_mlp(), 0, helper.make_tensor(
        "W1", TensorProto.STRING, [4, 8], [b"x"] * 32)), ModelFormatError, "dtype object"),
    "bfloat16_weight": (lambda: _set_init(_mlp(), 0, _raw("W1", TensorProto.BFLOAT16, [4, 8],
                                                           b"\0" * 64)),
                        ModelFormatError, "bfloat16"),
    "zero_dim_weight": (lambda: _set_init(_mlp(), 0, _raw("W1", 1, [0, 8], b"")),
                        ModelFormatError, "fc1_matmul"),
    "input_dynamic_dim": (lambda: _with_input_dims(["N", "M"]), ModelFormatError, "dynamic"),
    "input_zero_dim": (lambda: _with_input_dims([1, 0]), ModelFormatError, "dimension 1 as 0"),
    "input_huge": (lambda: _with_input_dims([1, 10**12]), ModelFormatError, "MAX_VALUE_SIZE"),
    "input_overflow": (lambda: _with_input_dims([2**62, 2**62]), ModelFormatError,
                       "MAX_VALUE_SIZE"),
    "cycle": (lambda: _rewire(0, 0, "output"), GraphError, "cycle: 'fc1_matmul'"),
    "self_loop": (lambda: _rewire(2, 0, "relu1"), GraphError, "cycle: 'relu1'"),
    "dangling": (lambda: _rewire(2, 0, "nobody"), ModelFormatError, "'nobody', which no node"),
    "out_of_order": (_reordered, ModelFormatError, "topological order"),
    "bad_utf8_name": (_bad_utf8_name, ModelFormatError, "UTF-8"),
    "external_parent": (None, ModelFormatError, "external data"),
    "external_in_subgraph": (_subgraph_external, ModelFormatError, "'/etc/passwd'"),
    "sparse_initializer": (_sparse, (ModelFormatError, UnsupportedOp), "sparse"),
    "broadcast_blowup": (lambda: _single_op("Mul", [_f32(np.ones((20000, 1)), "c")], [1, 20000],
                                            [20000, 20000]),
                         ModelFormatError, "MAX_VALUE_SIZE"),
    "dense_blowup": (lambda: _single_op("Mul", [_f32(3.0, "s")], [1, 20000], [1, 20000]),
                     ModelFormatError, "MAX_ELEMENTS"),
    "rational_blowup": (lambda: _single_op("Div", [_f32(3.0, "s")], [1, 5000], [1, 5000]),
                        ModelFormatError, "MAX_RATIONAL_ENTRIES"),
    "matmul_blowup": (lambda: _single_op("MatMul", [_f32(np.ones((1, 10**7)), "w")], [1, 1],
                                         [1, 10**7]),
                      ModelFormatError, "MAX_VALUE_SIZE"),
}


def _external(location: str) -> onnx.ModelProto:
    m = _mlp()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value=location)
    return m


HOSTILE_ONNX["external_parent"] = (lambda: _external("../secret"), ModelFormatError,
                                   "external data")


@pytest.mark.parametrize("case", sorted(HOSTILE_ONNX))
def test_onnx_hostile_model(case):
    build, cls, needle = HOSTILE_ONNX[case]
    m = build()
    blob = m if isinstance(m, bytes) else m.SerializeToString()
    t0 = time.perf_counter()
    exc = only_leo_errors(ONNX_ERRORS, graph_from_onnx_model, blob, source=f"{case}.onnx")
    assert isinstance(exc, cls), exc
    assert needle in str(exc) and f"{case}.onnx" in str(exc)
    assert time.perf_counter() - t0 < 10


def _repeated(op_pairs: int, n: int, scale: bool) -> bytes:
    """input [1, n] -> (Mul by a scalar ->) Relu, repeated: a tiny file, a huge network."""
    nodes, prev = [], "input"
    for i in range(op_pairs):
        if scale:
            nodes.append(helper.make_node("Mul", [prev, "s"], [f"m{i}"], name=f"mul{i}"))
            prev = f"m{i}"
        nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["output"]))
    g = helper.make_graph(nodes, "rep",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, n])],
                          initializer=[_f32(3.0, "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


def test_onnx_total_budget(monkeypatch):
    """Each op is within the per-matrix limits, the model as a whole is not."""
    blob = _repeated(100, 500, scale=True)
    assert len(blob) < 6000
    monkeypatch.setattr(limits, "MAX_TOTAL_ELEMENTS", 10**7)  # 2 x 250000 entries per layer
    with pytest.raises(ModelFormatError, match=r"node 'mul\d+' \(Mul\).*MAX_TOTAL_ELEMENTS"):
        graph_from_onnx_model(blob, source="rep.onnx")
    monkeypatch.setattr(limits, "MAX_TOTAL_ELEMENTS", 10**9)
    monkeypatch.setattr(limits, "MAX_NEURONS", 10_000)
    with pytest.raises(ModelFormatError, match=r"node 'relu20' \(Relu\).*MAX_NEURONS"):
        graph_from_onnx_model(_repeated(30, 500, scale=False), source="rep.onnx")
    graph_from_onnx_model(_repeated(20, 500, scale=False))  # 10000 units: at the limit, fine


def test_onnx_file_size_limit(tmp_path, monkeypatch):
    p = tmp_path / "big.onnx"
    p.write_bytes(VALID_ONNX["mlp"])
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 100)
    with pytest.raises(ModelFormatError, match="MAX_FILE_BYTES"):
        load_onnx(p)


# -- external data: refused, and no file outside (or inside) the folder is opened ----
_AUDIT_SCRIPT = r'''
import ctypes, json, os, struct, sys
model_path, watched, also = sys.argv[1], sys.argv[2], sys.argv[3:]
from leo_verify import cli
from leo_verify.errors import LeoError
from leo_verify.io.onnx import load_onnx
import leo_verify.io.onnx, onnx.checker, onnx.numpy_helper  # imported before the hooks

# inotify sees opens and reads by any code in the process, C++ included (onnx opens
# external data in C++, invisible to the audit hook)
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
IN_ACCESS, IN_OPEN = 0x1, 0x20
wds = {}
for label, folder in (("outside", watched), ("model", os.path.dirname(model_path))):
    wd = libc.inotify_add_watch(fd, folder.encode(), IN_ACCESS | IN_OPEN) if fd >= 0 else -1
    if wd >= 0:
        wds[wd] = label
inotify = len(wds) == 2

def drain():
    names = []
    if not inotify:
        return names
    try:
        buf = os.read(fd, 65536)
    except BlockingIOError:
        return names
    i = 0
    while i < len(buf):
        wd, mask, _, ln = struct.unpack_from("iIII", buf, i)
        names.append(wds.get(wd, "?") + "/" + buf[i + 16:i + 16 + ln].rstrip(b"\0").decode())
        i += 16 + ln
    return names

opened = []
def hook(event, args):
    if event in ("open", "os.open") and args and isinstance(args[0], (str, bytes, int)):
        opened.append(os.fsdecode(args[0]) if not isinstance(args[0], int) else str(args[0]))
sys.addaudithook(hook)

out = {}
try:
    load_onnx(model_path)
    out["api"] = "loaded"
except LeoError as e:
    out["api"] = type(e).__name__ + ": " + str(e)
out["cli"] = cli.main(["info", model_path])
out["opened"] = opened[:]
out["inotify"] = inotify
out["events"] = drain()
# positive control: the watch does see an open of a watched file
for name in also:
    with open(os.path.join(watched, name), "rb") as fh:
        fh.read(1)
out["control"] = drain()
print(json.dumps(out))
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify proof is Linux-only")
def test_onnx_external_data_opens_no_file(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"\0" * 128)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 128)
    os.symlink(outside / "secret.bin", folder / "link.bin")
    script = tmp_path / "audit.py"
    script.write_text(_AUDIT_SCRIPT)
    cases = {"parent": "../outside/secret.bin", "absolute": str(outside / "secret.bin"),
             "symlink": "link.bin", "inside": "weights.bin", "passwd": "/etc/passwd"}
    for label, location in cases.items():
        model = folder / f"{label}.onnx"
        model.write_bytes(_external(location).SerializeToString())
        # cwd = the model folder: relative locations resolve to files that exist there
        # (onnx's own loader would read them relative to the working directory)
        r = subprocess.run([sys.executable, str(script), str(model), str(outside), "secret.bin"],
                           capture_output=True, text=True, timeout=120, cwd=folder)
        assert r.returncode == 0, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("leo-verify: error: "), r.stderr
        assert str(model) in lines[0] and "external data" in lines[0]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["api"].startswith("ModelFormatError") and location in out["api"], out["api"]
        assert out["cli"] == ModelFormatError.exit_code
        # Python-level opens: only the model file itself, nothing in either folder else,
        # and never /etc/passwd
        for path in out["opened"]:
            real = os.path.realpath(path)
            assert real != "/etc/passwd", label
            assert not real.startswith(str(outside)), (label, path)
            if real.startswith(str(folder)):
                assert real == str(model), (label, path)
        assert str(model) in [os.path.realpath(p) for p in out["opened"]]  # the hook works
        # kernel-level (C++ code included): nothing in the outside folder is opened or
        # read, and in the model folder only the model file itself
        if out["inotify"]:
            assert {e for e in out["events"] if e != f"model/{model.name}"} == set(), \
                (label, out["events"])
            assert f"model/{model.name}" in out["events"]  # the watch works...
            assert "outside/secret.bin" in out["control"]  # ...on both folders


# ===========================================================================
# .nnet
# ===========================================================================
NNET_ERRORS = (ModelFormatError, GraphError)

TINY_NNET = """\
// a hand-written 2-3-1 network
2,2,1,3,
2,3,1,
0,
-1,-2,
1,2,
0.5,-1,10,
2,4,3,
1,0,
0,1,
1,1,
0,
0,
-1,
1,1,-1,
0.5,
"""

_NNET_TOKENS = ["", "nan", "inf", "-1", "0", "1e999", "9" * 30, "9" * 5000, "abc", "1,2", "\x00",
                "\uff11", "1e-400", " ", "-0", "+3", "0x10", "1_000", "2.5", "1000000", "99999999"]


@st.composite
def mutated_nnet(draw) -> str:
    lines = TINY_NNET.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["token", "token", "delete", "dup", "truncate", "insert"]))
        k = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if not lines:
            break
        if kind == "token":
            toks = lines[k].split(",")
            j = draw(st.integers(0, len(toks) - 1))
            toks[j] = draw(st.one_of(st.sampled_from(_NNET_TOKENS), st.text(max_size=5)))
            lines[k] = ",".join(toks)
        elif kind == "delete":
            del lines[k]
        elif kind == "dup":
            lines.insert(k, lines[k])
        elif kind == "truncate":
            lines = lines[:k]
        else:
            lines.insert(k, draw(st.text(max_size=12)))
    return "\n".join(lines) + "\n"


def _write_text(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.write_bytes(text.encode("utf-8", "surrogatepass"))
    return p


@fuzz(150)
@given(text=mutated_nnet(), normalize=st.booleans())
def test_nnet_mutated(scratch, text, normalize):
    p = _write_text(scratch, "mut.nnet", text)
    only_leo_errors(NNET_ERRORS, load_nnet, p, normalize=normalize)


def _nnet(header: str, sizes: str, body: str = "") -> str:
    return f"{header}\n{sizes}\n0,\n0,0,\n1,1,\n0,0,0,\n1,1,1,\n{body}"


HOSTILE_NNET = {
    "fewer_rows": (_nnet("5,2,1,3,", "2,3,3,3,3,1,", "1,0,\n0,1,\n"), "ends early"),
    "wrong_columns": (_nnet("1,2,1,2,", "2,1,", "1,0,5,\n0,\n"), "expected 2 value(s)"),
    "non_numeric": (_nnet("1,2,1,2,", "2,1,", "1,zero,\n0,\n"), "'zero' is not a number"),
    "negative_size": (_nnet("1,2,1,2,", "2,-1,"), "layer size -1"),
    "huge_size": (_nnet("1,2,1,2000000000,", "2,2000000000,"), "outside 1..1000000"),
    "huge_params": (_nnet("2,2,1000000,1000000,", "2,1000000,1000000,"), "parameters"),
    "bigint_header": ("9" * 5000 + ",2,1,2,\n", "too large"),
    "bigint_size": (_nnet("1,2,1,2,", "2," + "9" * 5000 + ","), "too large"),
    "header_mismatch": (_nnet("1,3,1,3,", "2,1,"), "inputSize is 3"),
    "nan_weight": (_nnet("1,2,1,2,", "2,1,", "nan,0,\n0,\n"), "'nan' is not a number"),
    "overflow_weight": (_nnet("1,2,1,2,", "2,1,", "1e999,0,\n0,\n"), "overflows float64"),
    "not_utf8": ("1,2,1,2,\n\udcff\n", "not UTF-8"),
    "min_above_max": ("1,2,1,2,\n2,1,\n0,\n0,5,\n1,1,\n0,0,0,\n1,1,1,\n1,0,\n0,\n", "minimum 5.0"),
    "trailing_garbage": (_nnet("1,2,1,2,", "2,1,", "1,0,\n0,\nextra\n"), "unexpected content"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_NNET))
def test_nnet_hostile(tmp_path, case):
    text, needle = HOSTILE_NNET[case]
    p = _write_text(tmp_path, f"{case}.nnet", text)
    exc = only_leo_errors(NNET_ERRORS, load_nnet, p)
    assert isinstance(exc, ModelFormatError) and needle in str(exc), exc
    assert str(p) in str(exc)


def test_nnet_normalize_size_refused_before_allocating(tmp_path):
    n = 100_000
    ones, zeros = ",".join(["1"] * n), ",".join(["0"] * n)
    text = (f"1,{n},1,{n},\n{n},1,\n0,\n{zeros}\n{ones}\n{zeros},0\n{ones},1\n{ones}\n0\n")
    p = _write_text(tmp_path, "wide.nnet", text)
    assert load_nnet(p).input_size == n  # fine without normalisation
    with pytest.raises(ModelFormatError, match="MAX_RATIONAL_ENTRIES"):
        load_nnet(p, normalize=True)


def test_nnet_file_size_limit(tmp_path, monkeypatch):
    p = _write_text(tmp_path, "t.nnet", TINY_NNET)
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 10)
    with pytest.raises(ModelFormatError, match="MAX_FILE_BYTES"):
        load_nnet(p)


# ===========================================================================
# VNNLIB
# ===========================================================================
VNN_HEAD = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
VNN_BOX = ("(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
           "(assert (<= X_1 0.5))\n(assert (>= X_1 -0.5))\n")
VALID_VNNLIB = VNN_HEAD + VNN_BOX + "(assert (>= Y_0 3.5))\n"

_VNN_TOKENS = ["(", "(", "(", ")", ")", ")", "assert", "declare-const", "declare-fun", "X_0", "X_1",
               "X_2", "Y_0", "Real", "Int", "<=", ">=", "<", "=", "and", "or", "not", "+", "-", "*",
               "/", "1", "0.5", "-2", "1e400", "1e-400", "NaN", "inf", "#", "|", '"', ";", "\n",
               "X_99999999999", "()", "0" * 1200, "(- 1)", "(/ 1 0)"]


def _check_property(prop):
    """A parsed property is sound: each float box contains its exact box."""
    assert prop.boxes and len(prop.boxes) == len(prop.exact_boxes)
    for box, (qlo, qhi) in zip(prop.boxes, prop.exact_boxes):
        assert box.size == prop.n_inputs
        assert np.all(box.lower <= box.upper)
        for i in range(box.size):
            lo, hi = Fraction(float(box.lower[i])), Fraction(float(box.upper[i]))
            assert lo <= qlo[i] <= qhi[i] <= hi


@fuzz(150)
@given(toks=st.lists(st.sampled_from(_VNN_TOKENS), max_size=60))
def test_vnnlib_token_soup(toks):
    res = only_leo_errors(DomainError, parse_vnnlib, " ".join(toks), source="soup.vnnlib")
    if not isinstance(res, LeoError):
        _check_property(res)


@fuzz(100)
@given(text=st.text(max_size=40), pos=st.integers(0, len(VALID_VNNLIB)), cut=st.integers(0, 20))
def test_vnnlib_text_mutations(text, pos, cut):
    mutated = VALID_VNNLIB[:pos] + text + VALID_VNNLIB[pos + cut:]
    res = only_leo_errors(DomainError, parse_vnnlib, mutated, source="mut.vnnlib")
    if not isinstance(res, LeoError):
        _check_property(res)


_BOUND = st.one_of(st.integers(-5, 5).map(str), st.sampled_from(
    ["0.1", "-0.3", "1e-3", "(- 0.5)", "(/ 1 3)", "NaN", "inf", "1e400", "(* 2 0.25)", "X_1",
     "Y_0", "(+ X_0 1)", "1.7976931348623157e308", "2e308"]))


@st.composite
def vnnlib_properties(draw) -> str:
    n = draw(st.integers(1, 3))
    lines = [f"(declare-const X_{i} Real)" for i in range(n)] + ["(declare-const Y_0 Real)"]

    def atom(i):
        op = draw(st.sampled_from(["<=", ">=", "<", ">", "="]))
        var, c = f"X_{i}", draw(_BOUND)
        return f"({op} {var} {c})" if draw(st.booleans()) else f"({op} {c} {var})"
    for i in range(n):
        for _ in range(draw(st.integers(0, 2))):  # 0 or 1 bounds: unbounded inputs
            lines.append(f"(assert {atom(i)})")
    if draw(st.booleans()):
        alts = [" ".join(atom(draw(st.integers(0, n - 1))) for _ in range(draw(st.integers(0, 3))))
                for _ in range(draw(st.integers(0, 3)))]
        lines.append("(assert (or " + " ".join(f"(and {a})" for a in alts) + "))")
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["(assert (<= (+ X_0 X_0) 1))", "(assert (<= X_0 Y_0))",
                                           "(assert (not (<= X_0 1)))", "(assert (>= Y_0 1))",
                                           "(assert (<= X_0 1 0.5 X_0))"])))
    return "\n".join(lines) + "\n"


@fuzz(150)
@given(text=vnnlib_properties())
def test_vnnlib_generated_properties(text):
    res = only_leo_errors(DomainError, parse_vnnlib, text, source="gen.vnnlib")
    if not isinstance(res, LeoError):
        _check_property(res)


HOSTILE_VNNLIB = {
    "deep_parens": ("(" * 100_000 + ")" * 100_000, "nesting deeper"),
    "deep_and": (VNN_HEAD + "(assert " + "(and " * 100_000 + "(<= X_0 1)" + ")" * 100_001,
                 "nesting deeper"),
    "unbalanced_open": (VALID_VNNLIB + "(assert (<= X_0 1)", "unbalanced '('"),
    "unbalanced_close": (VALID_VNNLIB + "))", "unbalanced ')'"),
    "unknown_op": (VNN_HEAD + VNN_BOX + "(assert (foo X_0 1))", "only box constraints"),
    "garbage": (VNN_HEAD + VNN_BOX + "#$%^", "outside parentheses"),
    "one_bound_only": (VNN_HEAD + "(assert (<= X_0 1))(assert (>= X_0 0))(assert (<= X_1 1))",
                       "X_1 has no lower bound"),
    "no_bounds": (VNN_HEAD + "(assert (<= X_0 1))(assert (>= X_0 0))", "X_1 has no lower"),
    "non_box": (VNN_HEAD + VNN_BOX + "(assert (<= (+ X_0 X_1) 1))", "only box constraints"),
    "mixed": (VNN_HEAD + VNN_BOX + "(assert (<= X_0 Y_0))", "mixes inputs and outputs"),
    "lower_above_upper": (VNN_HEAD + "(assert (<= X_0 0))(assert (>= X_0 1))"
                                     "(assert (<= X_1 1))(assert (>= X_1 0))", "lower bound 1"),
    "nan_literal": (VNN_HEAD + VNN_BOX.replace("(<= X_0 1)", "(<= X_0 NaN)"), "not a finite"),
    "inf_literal": (VNN_HEAD + VNN_BOX.replace("(<= X_0 1)", "(<= X_0 +inf)"), "not a finite"),
    "overflow_literal": (VNN_HEAD + VNN_BOX.replace("(<= X_0 1)", "(<= X_0 1e400)"),
                         "not finite in float64"),
    "huge_index": ("(declare-const X_99999999999 Real)", "X_0 is not declared"),
    "huge_product": (VNN_HEAD + VNN_BOX + "(assert (<= X_0 (* " + " ".join(["1e-300"] * 5000)
                     + ")))", "MAX_CONST_BITS"),
    "many_boxes": ("".join(f"(declare-const X_{i} Real)(assert (<= X_{i} 1))(assert (>= X_{i} 0))"
                           for i in range(3000))
                   + "(assert (or " + "(and (<= X_0 0.5))" * 10_000 + "))", "MAX_BOX_VALUES"),
    "disjunction_inside_or": (VNN_HEAD + "(assert (or (and (or (<= X_0 1) (<= X_0 2)))))",
                              "inside (or ...)"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_VNNLIB))
def test_vnnlib_hostile(case):
    text, needle = HOSTILE_VNNLIB[case]
    t0 = time.perf_counter()
    exc = only_leo_errors(DomainError, parse_vnnlib, text, source=f"{case}.vnnlib")
    assert isinstance(exc, DomainError) and needle in str(exc), exc
    assert f"{case}.vnnlib" in str(exc)
    assert time.perf_counter() - t0 < 10, "parse time must stay bounded"


def test_vnnlib_disjunction_is_supported():
    text = VNN_HEAD + ("(assert (or (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0))"
                       " (and (<= X_0 3) (>= X_0 2) (<= X_1 1) (>= X_1 0))))")
    prop = parse_vnnlib(text)
    assert len(prop.boxes) == 2
    _check_property(prop)


def test_vnnlib_parse_time_is_linear():
    """Twice the file, at most ~3x the time (measured: 1x-2x); no quadratic corner."""
    def body(n):
        return ("".join(f"(declare-const X_{i} Real)\n" for i in range(n))
                + "".join(f"(assert (<= X_{i} 0.{i}))\n(assert (>= X_{i} -0.{i}))\n"
                          for i in range(n)))
    small, big = body(4000), body(8000)
    parse_vnnlib(small)  # warm up

    def best(text):
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            parse_vnnlib(text)
            times.append(time.perf_counter() - t0)
        return min(times)
    assert best(big) < 3.5 * best(small) + 0.05


def test_vnnlib_many_shared_boxes_are_fast():
    # 1000 boxes x 3000 inputs: each box only pays for its own bounds
    text = ("".join(f"(declare-const X_{i} Real)(assert (<= X_{i} 1))(assert (>= X_{i} 0))"
                    for i in range(3000)) + "(assert (or " + "(and (<= X_0 0.5))" * 1000 + "))")
    t0 = time.perf_counter()
    prop = parse_vnnlib(text)
    assert len(prop.boxes) == 1000 and time.perf_counter() - t0 < 10
    assert prop.boxes[7].upper[0] == 0.5 and prop.boxes[7].upper[1] == 1.0


# ===========================================================================
# JSON domains
# ===========================================================================
_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4))
_JSON = st.recursive(_JSON_LEAF, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=6), kids, max_size=4)),
    max_leaves=12)
_NUMS = st.lists(st.one_of(st.floats(-3, 3), _JSON_LEAF), min_size=0, max_size=4)


@fuzz(150)
@given(data=st.one_of(
    _JSON,
    st.fixed_dictionaries({"lower": st.one_of(_NUMS, _JSON), "upper": st.one_of(_NUMS, _JSON)}),
    st.fixed_dictionaries({"lower": _NUMS}),
))
def test_json_domain_values(data):
    res = only_leo_errors(DomainError, Box.from_json, data, source="fuzz.json")
    if not isinstance(res, LeoError):
        assert res.size >= 1 and np.all(res.lower <= res.upper)
        assert np.all(np.isfinite(res.lower)) and np.all(np.isfinite(res.upper))


HOSTILE_JSON = {
    "string": ('{"lower": [0, "0"], "upper": [1, 1]}', "lower[1] = '0' is not a number"),
    "nested": ('{"lower": [[0], 0], "upper": [1, 1]}', "lower[0] = [0] is not a number"),
    "null": ('{"lower": null, "upper": [1]}', "'lower' must be a list"),
    "boolean": ('{"lower": [true], "upper": [1]}', "lower[0] = True is not a number"),
    "nan": ('{"lower": [NaN], "upper": [1]}', "non-finite"),
    "infinity": ('{"lower": [0], "upper": [Infinity]}', "non-finite"),
    "big_int": ('{"lower": [' + "9" * 5000 + '], "upper": [1]}', "non-finite"),
    "big_float": ('{"lower": [0], "upper": [1e999]}', "non-finite"),
    "missing_key": ('{"lower": [0]}', "expected an object with 'lower' and 'upper'"),
    "not_object": ('[0, 1]', "expected an object"),
    "length_mismatch": ('{"lower": [0, 0], "upper": [1]}', "2 lower bounds but 1 upper"),
    "lower_above_upper": ('{"lower": [0, 2], "upper": [1, 1]}', "input 1 has lower 2.0 > upper"),
    "empty": ('{"lower": [], "upper": []}', "no bounds"),
    "deep": ("[" * 100_000 + "]" * 100_000, "JSON"),
    "truncated": ('{"lower": [0, 1', "not valid JSON"),
    "not_utf8": ('{"lower": [0], "upper": [1], "source": "\udcff"}', "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_JSON))
def test_json_domain_hostile(tmp_path, case):
    text, needle = HOSTILE_JSON[case]
    p = _write_text(tmp_path, f"{case}.json", text)
    exc = only_leo_errors((DomainError,), load_domains, str(p), n=None)
    assert isinstance(exc, DomainError) and needle in str(exc), exc
    assert str(p) in str(exc)


def test_json_size_limit(tmp_path, monkeypatch):
    p = _write_text(tmp_path, "d.json", '{"lower": [0], "upper": [1]}')
    monkeypatch.setattr(limits, "MAX_JSON_BYTES", 5)
    with pytest.raises(DomainError, match="MAX_JSON_BYTES"):
        load_domains(str(p))


# ===========================================================================
# PyTorch state dicts
# ===========================================================================
TORCH_ERRORS = (ModelFormatError, GraphError, InputFileError)


def _state_dict_bytes(sd) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def _mlp_state_dict():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return net.state_dict()


VALID_PT = {"zip": _state_dict_bytes(_mlp_state_dict())}
_legacy = io.BytesIO()
torch.save(_mlp_state_dict(), _legacy, _use_new_zipfile_serialization=False)
VALID_PT["legacy"] = _legacy.getvalue()


@fuzz(200)
@given(blob=mutated_bytes(VALID_PT))
def test_torch_mutated_bytes(scratch, blob):
    p = scratch / "mut.pt"
    p.write_bytes(blob)
    only_leo_errors(TORCH_ERRORS, load_torch_file, p)


class _Evil:
    """Unpickling this would run a shell command creating ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilExec:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _evil_files(folder: Path):
    """(path, marker) of malicious files in every container torch.load accepts."""
    out = []
    for k, cls in enumerate((_Evil, _EvilExec)):
        marker = folder / f"PWNED_{k}"
        zpath = folder / f"evil_zip_{k}.pt"
        torch.save({"0.weight": cls(marker)}, zpath)
        out.append((zpath, marker))
        rpath = folder / f"evil_raw_{k}.pt"  # a bare pickle (torch's legacy path)
        rpath.write_bytes(pickle.dumps(cls(marker), protocol=2))
        out.append((rpath, marker))
        lpath = folder / f"evil_legacy_{k}.pt"
        torch.save({"0.weight": cls(marker)}, lpath, _use_new_zipfile_serialization=False)
        out.append((lpath, marker))
    return out


def test_torch_malicious_pickle_is_not_executed(tmp_path):
    for path, marker in _evil_files(tmp_path):
        exc = only_leo_errors(TORCH_ERRORS, load_torch_file, path)
        assert isinstance(exc, ModelFormatError), (path, exc)
        assert not marker.exists(), f"{path.name}: the payload ran"


HOSTILE_PT = {
    "expanded_huge": ({"0.weight": torch.zeros(1).expand(10**6, 10**6)}, "MAX_ELEMENTS"),
    "int_weight": ({"0.weight": torch.ones(2, 4, dtype=torch.int64)}, "torch.int64"),
    "half_weight": ({"0.weight": torch.ones(2, 4, dtype=torch.float16)}, "torch.float16"),
    "sparse_weight": ({"0.weight": torch.eye(3).to_sparse()}, "sparse"),
    "three_dims": ({"0.weight": torch.ones(2, 2, 2)}, "expected (out_features, in_features)"),
    "bias_mismatch": ({"0.weight": torch.ones(2, 4), "0.bias": torch.ones(3)}, "'0.bias'"),
    "chain_mismatch": ({"0.weight": torch.ones(2, 4), "2.weight": torch.ones(1, 3)}, "'2.weight'"),
    "not_tensor": ({"0.weight": [1.0, 2.0]}, "is a list, not a tensor"),
    "not_dict": ([torch.ones(2)], "holds a list"),
    "conv_key": ({"conv.running_mean": torch.ones(2)}, "unexpected key"),
    "nan_weight": ({"0.weight": torch.full((2, 4), float("nan"))}, "not finite"),
    "empty": ({}, "no Linear layers"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PT))
def test_torch_hostile_state_dict(tmp_path, case):
    sd, needle = HOSTILE_PT[case]
    p = tmp_path / f"{case}.pt"
    torch.save(sd, p)
    t0 = time.perf_counter()
    exc = only_leo_errors(TORCH_ERRORS, load_torch_file, p)
    assert isinstance(exc, LeoError) and needle in str(exc), exc
    assert str(p) in str(exc)
    assert time.perf_counter() - t0 < 10


def test_torch_total_budget(tmp_path, monkeypatch):
    """Stride-0 views: many layers, each within MAX_ELEMENTS, from a tiny file."""
    sd = {}
    for k in range(20):
        sd[f"{k}.weight"] = torch.zeros(1).expand(300, 300)
    p = tmp_path / "views.pt"
    torch.save(sd, p)
    assert p.stat().st_size < 20_000
    monkeypatch.setattr(limits, "MAX_TOTAL_ELEMENTS", 10**6)
    with pytest.raises(ModelFormatError, match=r"'11.weight'.*MAX_TOTAL_ELEMENTS"):
        load_torch_file(p)
    monkeypatch.setattr(limits, "MAX_TOTAL_ELEMENTS", 10**9)
    monkeypatch.setattr(limits, "MAX_NEURONS", 1000)
    with pytest.raises(ModelFormatError, match=r"layer '3'.*MAX_NEURONS"):
        load_torch_file(p)


def test_torch_file_size_limit(tmp_path, monkeypatch):
    p = tmp_path / "m.pt"
    p.write_bytes(VALID_PT["zip"])
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 100)
    with pytest.raises(ModelFormatError, match="MAX_FILE_BYTES"):
        load_torch_file(p)


# ===========================================================================
# no pickle on the input path
# ===========================================================================
def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = (f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute)
                    and isinstance(f.value, ast.Name) else getattr(f, "id", None)
                    or getattr(f, "attr", None))
            yield name, node


def test_no_unsafe_deserialisation_in_the_package():
    unsafe = {"pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.load", "marshal.loads",
              "shelve.open", "dill.load", "joblib.load", "cloudpickle.load"}
    seen_np_load = seen_torch_load = 0
    for path in sorted((ROOT / "leo_verify").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, call in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            assert name not in unsafe, f"{where}: {name}"
            kw = {k.arg: k.value for k in call.keywords}
            if name in ("np.load", "numpy.load"):
                seen_np_load += 1
                v = kw.get("allow_pickle")
                assert isinstance(v, ast.Constant) and v.value is False, \
                    f"{where}: np.load without allow_pickle=False"
            if name == "torch.load":
                seen_torch_load += 1
                v = kw.get("weights_only")
                assert isinstance(v, ast.Constant) and v.value is True, \
                    f"{where}: torch.load without weights_only=True"
    assert seen_np_load >= 1 and seen_torch_load >= 1  # the scan does find the calls


# ===========================================================================
# through the CLI
# ===========================================================================
@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    files = {}

    def put(name, data):
        p = d / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
        files[name] = p
    put("truncated.onnx", VALID_ONNX["mlp"][:300])
    for case in ("huge_no_data", "dims_overflow_int64", "cycle", "dangling", "input_huge",
                 "bad_utf8_name", "string_weight", "dense_blowup"):
        m = HOSTILE_ONNX[case][0]()
        put(f"{case}.onnx", m if isinstance(m, bytes) else m.SerializeToString())
    put("external.onnx", _external("../secret").SerializeToString())
    put("bigint.nnet", HOSTILE_NNET["bigint_header"][0])
    put("fewer_rows.nnet", HOSTILE_NNET["fewer_rows"][0])
    for case in ("deep_parens", "huge_index", "huge_product", "nan_literal", "non_box"):
        put(f"{case}.vnnlib", HOSTILE_VNNLIB[case][0])  # refused while parsing
    for case in ("nan", "big_int", "string", "deep"):
        put(f"{case}.json", HOSTILE_JSON[case][0])
    torch.save({"0.weight": torch.zeros(1).expand(10**6, 10**6)}, d / "expanded.pt")
    files["expanded.pt"] = d / "expanded.pt"
    (path, marker), = [e for e in _evil_files(d) if e[0].name == "evil_zip_0.pt"]
    files["evil.pt"], files["marker"] = path, marker
    files["valid.onnx"] = BROKEN / "valid_mlp.onnx"
    files["dir"] = d
    return files


_CLI_MODELS = {  # file -> exit code of `leo-verify info FILE`
    "truncated.onnx": 5, "huge_no_data.onnx": 5, "dims_overflow_int64.onnx": 5, "cycle.onnx": 7,
    "dangling.onnx": 5, "input_huge.onnx": 5, "bad_utf8_name.onnx": 5, "string_weight.onnx": 5,
    "dense_blowup.onnx": 5, "external.onnx": 5, "bigint.nnet": 5, "fewer_rows.nnet": 5,
    "expanded.pt": 5, "evil.pt": 5,
}
_CLI_DOMAINS = ["deep_parens.vnnlib", "huge_index.vnnlib", "huge_product.vnnlib",
                "nan_literal.vnnlib", "non_box.vnnlib", "nan.json", "big_int.json", "string.json",
                "deep.json"]


def _one_error_line(stderr: str, path) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("leo-verify: error: "), stderr
    assert "Traceback" not in stderr
    assert str(path) in lines[0], (str(path), lines[0])
    return lines[0]


def _domain_argv(files, name):
    return ["analyze", str(files["valid.onnx"]), "--domain", str(files[name]),
            "-o", str(files["dir"] / "facts.json")]


@pytest.mark.parametrize("name", sorted(_CLI_MODELS))
def test_cli_model_in_process(hostile_files, capsys, name):
    code = cli.main(["info", str(hostile_files[name])])
    out, err = capsys.readouterr()
    assert code == _CLI_MODELS[name] and out == ""
    _one_error_line(err, hostile_files[name])
    assert not hostile_files["marker"].exists()


@pytest.mark.parametrize("name", _CLI_DOMAINS)
def test_cli_domain_in_process(hostile_files, capsys, name):
    code = cli.main(_domain_argv(hostile_files, name))
    out, err = capsys.readouterr()
    assert code == DomainError.exit_code and out == ""
    _one_error_line(err, hostile_files[name])


def test_cli_npy_header_declaring_huge_array(hostile_files, capsys):
    """A 100-byte .npy whose header declares 10^12 rows: refused, nothing allocated."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 4)})
    p = hostile_files["dir"] / "huge_header.npy"
    p.write_bytes(buf.getvalue() + b"\0" * 64)
    code = cli.main(["eval", str(hostile_files["valid.onnx"]), "--input", str(p)])
    out, err = capsys.readouterr()
    assert code == 9 and out == ""
    _one_error_line(err, p)


def _run_cli(argv):
    env = {k: v for k, v in os.environ.items() if k != "LEO_VERIFY_DEBUG"}
    return subprocess.run([sys.executable, "-m", "leo_verify", *argv], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT)


@pytest.mark.parametrize("argv_of,code", [
    (lambda f: ["info", f["truncated.onnx"]], 5),
    (lambda f: ["info", f["huge_no_data.onnx"]], 5),
    (lambda f: ["info", f["cycle.onnx"]], 7),
    (lambda f: ["eval", f["dims_overflow_int64.onnx"], "--input", BROKEN / "point.json"], 5),
    (lambda f: ["info", f["bigint.nnet"]], 5),
    (lambda f: ["info", f["evil.pt"]], 5),
    (lambda f: _domain_argv(f, "deep_parens.vnnlib"), 8),
    (lambda f: _domain_argv(f, "big_int.json"), 8),
], ids=["truncated-onnx", "huge-initializer", "cycle", "eval-overflow-dims", "bigint-nnet",
        "malicious-pickle", "deep-vnnlib", "bigint-json"])
def test_cli_subprocess(hostile_files, argv_of, code):
    argv = [str(a) for a in argv_of(hostile_files)]
    t0 = time.perf_counter()
    r = _run_cli(argv)
    assert time.perf_counter() - t0 < 60
    assert r.returncode == code, (r.returncode, r.stderr)
    target = next(a for a in argv if a.endswith((".onnx", ".nnet", ".pt", ".vnnlib", ".json"))
                  and "valid_mlp" not in a and "point.json" not in a)
    _one_error_line(r.stderr, target)
    assert r.stdout == ""
    assert not hostile_files["marker"].exists()
