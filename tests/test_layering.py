"""Imports only go down the layers docs/design.md lists, and no module
imports itself back through another."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_ssl"


def _layers():
    """The areas of docs/design.md's layer table, top first."""
    text = (ROOT / "docs" / "design.md").read_text()
    table = text[text.index("| layer | what it holds |") :]
    table = table[: table.index("\n\n")]
    names = re.findall(r"^\| `([a-z_]+)(?:/|\.py)` \|", table, re.M)
    assert names, "docs/design.md has no layer table"
    return names


def _area(module):
    """`keras_ssl.models.fine_tuner` -> `models`; `None` for the package's
    own private helpers (`_checks`, `_registry`) and entry points, which
    any layer may use or which use any layer."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1].startswith("_"):
        return None
    return parts[1]


def _imports():
    """`(module, imported module)` for every keras_ssl import, inner
    imports included."""
    edges = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(p for p in parts if p != "__init__")
        package = (
            module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        )
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[
                        : len(package.split(".")) - node.level + 1
                    ]
                    base = ".".join(anchor + ([base] if base else []))
                # `from keras_ssl import data` imports `keras_ssl.data`.
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            edges += [(module, n) for n in names if n.startswith("keras_ssl.")]
    return edges


def test_imports_only_go_down_the_layers():
    layers = _layers()
    rank = {name: i for i, name in enumerate(layers)}
    upward = []
    for module, imported in _imports():
        here, there = _area(module), _area(imported)
        if here is None or there is None or here == there:
            continue
        assert here in rank, f"{here} (of {module}) is not in the table"
        if there in rank and rank[there] < rank[here]:
            upward.append(f"{module} -> {imported}")
    assert not upward, f"imports up the layers of docs/design.md: {upward}"


def test_no_import_cycles_between_modules():
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
    }
    modules = {m.removesuffix(".__init__") for m in modules}
    graph = {}
    for module, imported in _imports():
        # `from keras_ssl.layers import Views` is an import of the
        # package; the name itself may be a class.
        while imported not in modules and "." in imported:
            imported = imported.rsplit(".", 1)[0]
        if imported != module and not module.startswith(imported + "."):
            graph.setdefault(module, set()).add(imported)
    # A package's `__init__` imports its own modules; a module importing
    # a name from its own package goes through that `__init__`: not a cycle.
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"
