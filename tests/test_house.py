"""The house: no import circles among leo_verify's modules, no oversized module.

Import graph (static, from the sources; nothing is imported):

* every ``import`` / ``from ... import`` in a module counts, at module level and inside
  functions alike.  Module-level imports are what makes a circle fail at import time, but a
  function-level import back into a module that imports you is the same tangle, only deferred
  (it is how the old circles were hidden), so both count.  Imports under ``if TYPE_CHECKING:``
  do not count: they never run.
* relative imports are resolved against the importing module (a package's ``__init__``
  resolves ``.`` to the package itself).
* ``from P import name`` is an edge to ``P.name`` when that is a module of the package, else
  to ``P``.  ``import a.b.c`` is an edge to ``a.b.c`` only: the implicit imports of the parent
  packages ``a`` and ``a.b`` are not edges (every submodule would otherwise "import" the root
  package, a circle with whatever the root's ``__init__`` imports).
* only modules of ``leo_verify`` are nodes; ``leo_verify.cli`` and ``leo_verify.cli_*`` are
  left out while :data:`CLI_EXCLUDED` is true.
"""
from __future__ import annotations

import ast
import os

import networkx as nx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "leo_verify")

#: leave ``leo_verify.cli`` and ``leo_verify.cli_*`` out of the import graph (flip to False
#: once the command-line modules no longer import each other in a circle)
CLI_EXCLUDED = False

#: the longest a module under leo_verify/ may be, in lines
MAX_LINES = 600

#: modules allowed beyond MAX_LINES (path relative to leo_verify/ -> why)
LONG_MODULES = {
    "report/html.py": "one self-contained HTML page: its CSS, SVG drawings and sections render "
                      "one document; splitting would scatter a single template",
    "analysis/backends.py": "the two MILP solver adapters (SCIP, HiGHS) behind one Session, "
                            "with their shared scheduling state; 4% over the limit",
}


def _modules() -> dict:
    """Dotted module name -> source path, for every .py file under leo_verify/."""
    out = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            path = os.path.join(folder, f)
            parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(node: ast.AST):
    """Every Import/ImportFrom under ``node``, skipping ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _imports_of(other)
            continue
        yield from _imports_of(child)


def _imports_of(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    yield from _imports(node)


def _targets(module: str, is_package: bool, node: ast.AST, modules: dict) -> list:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            base = ".".join(base + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    out = []
    for name in names:
        while name not in modules and "." in name:  # e.g. "from .x import y" where y is a name
            name = name.rsplit(".", 1)[0]
        if name in modules and name != module:
            out.append(name)
    return out


def _excluded(module: str) -> bool:
    return CLI_EXCLUDED and (module == "leo_verify.cli" or module.startswith("leo_verify.cli_"))


def import_graph() -> nx.DiGraph:
    """Module -> module edges (attribute ``line``: where the first such import is)."""
    modules = _modules()
    graph = nx.DiGraph()
    for module, path in modules.items():
        if _excluded(module):
            continue
        graph.add_node(module)
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=path)
        is_package = os.path.basename(path) == "__init__.py"
        for node in _imports(tree):
            for target in _targets(module, is_package, node, modules):
                if not _excluded(target) and not graph.has_edge(module, target):
                    graph.add_edge(module, target, line=node.lineno)
    return graph


def test_the_walk_sees_the_package():
    g = import_graph()
    # a few edges that must be found: module level, function level, relative, in a package
    assert g.has_edge("leo_verify.compressor", "leo_verify.analysis")
    assert g.has_edge("leo_verify", "leo_verify.compressor")  # function-level import
    assert g.has_edge("leo_verify.io.onnx", "leo_verify.io.onnx.reader")
    assert g.has_edge("leo_verify.certify.fuzz", "leo_verify.sampling")
    assert ("leo_verify.cli" in g) is not CLI_EXCLUDED


def test_type_checking_imports_do_not_count():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
                     "else:\n    from . import b\ndef f():\n    from . import c\n")
    found = [n.names[0].name for n in _imports(tree) if n.level]
    assert found == ["b", "c"]


def test_no_import_circles():
    g = import_graph()
    cycles = sorted(nx.simple_cycles(g), key=lambda c: (len(c), c))
    shown = []
    for c in cycles[:10]:
        steps = [f"{a} (line {g.edges[a, b]['line']})" for a, b in zip(c, c[1:] + c[:1])]
        shown.append(" -> ".join(steps) + f" -> {c[0]}")
    assert not cycles, f"{len(cycles)} import circles, e.g.:\n" + "\n".join(shown)


def test_no_module_is_too_long():
    long = {}
    for path in _modules().values():
        with open(path, encoding="utf-8") as fh:
            n = sum(1 for _ in fh)
        rel = os.path.relpath(path, PACKAGE).replace(os.sep, "/")
        if n > MAX_LINES and rel not in LONG_MODULES:
            long[rel] = n
    assert not long, (f"modules over {MAX_LINES} lines (split them, or add them to LONG_MODULES "
                      f"with the reason): {long}")


def test_long_modules_allow_list_is_current():
    # an entry whose module is gone or no longer long is stale
    stale = []
    for rel in LONG_MODULES:
        path = os.path.join(PACKAGE, rel)
        if not os.path.isfile(path):
            stale.append(rel)
            continue
        with open(path, encoding="utf-8") as fh:
            if sum(1 for _ in fh) <= MAX_LINES:
                stale.append(rel)
    assert not stale, f"LONG_MODULES entries no longer needed: {stale}"
