"""Strict validation of ``certificate.json`` and ``report.json`` before anything is evaluated.

The schemas are published next to this module (``schemas/*.schema.json``,
JSON Schema draft 2020-12) and checked with ``jsonschema``, a well-kept
validator, not by hand.  Every object is closed (``additionalProperties:
false``): an unknown field is an error, not something silently ignored.
Every rational is the canonical ``p/q`` text of
:data:`~leo_verify.kernel.exact.RATIONAL_PATTERN`, in lowest terms (format
``leo-rational``, checked by :func:`~leo_verify.kernel.exact.parse_rational`).

A violation raises :class:`~leo_verify.errors.DataError` (exit 9) with one line
naming the field path, e.g. ``claims[3].proof.children[1].bound: "1/0" is not
a rational``.
"""
from __future__ import annotations

import json
import math
import os
import sys
from functools import lru_cache

from ..errors import DataError
from .exact import parse_rational

__all__ = ["validate", "schema_path", "MAX_DEPTH"]

#: deepest JSON nesting accepted (a tree level is two JSON levels; honest trees
#: are at most ~60 splits deep)
MAX_DEPTH = 600

_HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas")


def schema_path(kind: str) -> str:
    """The published schema file of ``kind`` (``"certificate"`` or ``"report"``)."""
    return os.path.join(_HERE, f"{kind}.schema.json")


@lru_cache(maxsize=None)
def _validator(kind: str):
    import jsonschema
    with open(schema_path(kind), encoding="utf-8") as fh:
        schema = json.load(fh)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    # "leo-rational": the pattern admits "2/4" and "-0"; one spelling per value is
    # the kernel parser's job (lowest terms), so the schema asks it
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("leo-rational", raises=ValueError)(_is_rational)
    checker.checks("leo-finite")(lambda v: not isinstance(v, float) or math.isfinite(v))
    return cls(schema, format_checker=checker)


def _is_rational(v) -> bool:
    if isinstance(v, str):
        parse_rational(v)
    return True


def _depth(doc) -> int:
    """Nesting depth of a parsed JSON value, iteratively (no recursion limit)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if d > deepest:
            deepest = d
            if d > MAX_DEPTH:
                return d
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _short(v) -> str:
    try:
        t = json.dumps(v)
    except (TypeError, ValueError):
        t = repr(v)
    return t if len(t) <= 60 else t[:57] + "..."


def _leaf(err):
    """The most specific error under a ``oneOf``/``anyOf`` (deepest path)."""
    while err.context:
        err = max(err.context, key=lambda e: (len(e.absolute_path), -len(e.context)))
    return err


def _message(err) -> str:
    err = _leaf(err)
    where = _path(err.absolute_path)
    title = err.schema.get("title") if isinstance(err.schema, dict) else None
    if err.validator == "format" and err.cause is not None:
        return f"{where}: {err.cause}"
    if err.validator in ("pattern", "type", "maxLength", "format") and title:
        return f"{where}: {_short(err.instance)} is not a {title}"
    if err.validator == "additionalProperties":
        return f"{where}: {err.message}"
    if err.validator == "required":
        return f"{where}: {err.message}"
    if err.validator == "propertyNames":
        return f"{where}: key {_short(err.instance)} is not allowed ({err.message})"
    return f"{where}: {_short(err.instance)}: {err.message}"


def validate(doc, kind: str, *, where: str) -> None:
    """Raise :class:`DataError` naming the first offending field of ``doc``.

    ``kind``: ``"certificate"`` or ``"report"``; ``where``: the file, for the message.
    """
    if _depth(doc) > MAX_DEPTH:
        raise DataError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    validator = _validator(kind)
    # the validator recurses a few frames per JSON level: make room for MAX_DEPTH
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20 * MAX_DEPTH + 1000))
    try:
        errors = sorted(validator.iter_errors(doc), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    finally:
        sys.setrecursionlimit(old)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DataError(f"{where}: {_message(errors[0])}{more}")
