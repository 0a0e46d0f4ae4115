"""The package's shape: no import cycles, small modules, typed."""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "pysched_lightning"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, name: str, modules: set) -> set:
    """The package modules *path* imports at import time (TYPE_CHECKING
    imports and imports inside functions do not count)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in tree.body:  # module level only
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef,
                                                            ast.AsyncFunctionDef)) else ():
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(sub, ast.ImportFrom) and sub.level:
                base = package
                for _ in range(sub.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{sub.module}" if sub.module else base
                for alias in sub.names:
                    full = f"{target}.{alias.name}"
                    found.add(full if full in modules else target)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, name, modules) for name, path in files.items()}


def test_no_import_cycle():
    graph = _graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own submodules is not a cycle of concern
    cycles = [c for c in cycles if not any(m == "pysched_lightning" for m in c)]
    assert cycles == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 420, f"{path.name} has {lines} lines: one concept per module"


def test_the_package_says_it_is_typed():
    assert (PACKAGE / "py.typed").exists()


#: The layers, top to bottom: a module imports its own layer and those below.
LAYERS = [
    ("apps", ("pysched_lightning.cli", "pysched_lightning.dashboard", "pysched_lightning.remote",
              "pysched_lightning.__main__")),
    ("facade", ("pysched_lightning",)),
    ("execution", ("pysched_lightning.execution", "pysched_lightning.contrib")),
    ("core", ("pysched_lightning.core",)),
    ("durability", ("pysched_lightning.durability",)),
    ("timing", ("pysched_lightning.timing",)),
    ("records", ("pysched_lightning.records",)),
]


def _layer(module: str) -> int:
    """The index in LAYERS of *module*'s layer (the longest prefix decides)."""
    best, found = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found is not None, module
    return found


def _all_imports(path: pathlib.Path, name: str, modules: set) -> set:
    """Every package module *path* imports, anywhere (functions and
    TYPE_CHECKING blocks included: a layer must not even name one above it)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def test_imports_run_down_the_layers_only():
    """apps -> facade -> execution -> core -> durability -> timing -> records."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    upward = []
    for name, path in sorted(files.items()):
        for imported in sorted(_all_imports(path, name, modules)):
            if _layer(imported) < _layer(name):
                upward.append(f"{name} ({LAYERS[_layer(name)][0]}) imports {imported} "
                              f"({LAYERS[_layer(imported)][0]})")
    assert upward == []


#: A run's life fields: only the run's life (RunLife and its extensions)
#: writes them.
RUN_LIFE = frozenset({"_phase", "_slot", "_claim", "_sent", "_t_timestamp", "_t_started",
                      "_t_finished", "_deadline", "_deadline_key", "_handle"})
#: Who may write a private field of an object that is not ``self``: the
#: owner of that field, and only it.
PRIVATE_WRITERS = {
    "core/runlife.py": RUN_LIFE, "core/handover.py": RUN_LIFE, "core/tasklife.py": RUN_LIFE,
    "core/sharing.py": RUN_LIFE,
    "core/runbook.py": frozenset({"_previous"}),  # the history chain it keeps
    "records/runs.py": None,  # Run.from_record builds a run of its own class
    "execution/killable.py": frozenset({"_killed", "_done"}),  # its own ProcessHandle
    "contrib/dask.py": frozenset({"_wrapped"}),  # a function it makes
}


def _private_writes(path: pathlib.Path):
    """(line, object, field) of each assignment to ``obj._field`` where obj is
    not ``self`` or ``cls``."""
    for node in ast.walk(ast.parse(path.read_text())):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            for item in (target.elts if isinstance(target, ast.Tuple) else [target]):
                if isinstance(item, ast.Attribute) and item.attr.startswith("_") \
                        and not item.attr.startswith("__") \
                        and not (isinstance(item.value, ast.Name)
                                 and item.value.id in ("self", "cls")):
                    yield node.lineno, ast.unparse(item.value), item.attr


def test_no_module_writes_another_s_private_fields():
    """A class's private fields are written by their owner only: a run's life
    fields by the run's life (core/runlife.py and its extensions)."""
    trespass = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        allowed = PRIVATE_WRITERS.get(where, frozenset())
        for line, obj, field in _private_writes(path):
            if allowed is not None and field not in allowed:
                trespass.append(f"{where}:{line} writes {obj}.{field}")
    assert trespass == []
