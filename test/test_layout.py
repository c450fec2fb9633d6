"""The code's shape: packages by concern, dependencies pointing one way, no import cycles, files a reader can
take in. Every import counts, including those inside functions: a lazy import does not break a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lsf_core", "lsf_ros")

# lsf_core's layers, lowest first: a module may import its own layer and those below it, never above.
LAYERS = {"base": 0, "models": 1, "face": 2, "runtime": 3, "data": 4, "evaluation": 5, "training": 6, "cli": 7}
MAX_TOP_LEVEL_MODULES = 8
MAX_LINES = 520   # "about 500": longer files say why in their docstring ("Long because ...")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``name`` imports anywhere in its file (module level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:   # `from pkg import name`: the module pkg.name, else pkg
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else 0


def test_no_import_cycles():
    """Kills: a module importing one that (directly or through others) imports it back, lazily or not."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:   # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            # a package importing its own submodules (re-exports) is not a cycle of code
            if len(comp) > 1 and not all(c.startswith(min(comp, key=len) + ".") or c == min(comp, key=len)
                                         for c in comp):
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_dependencies_point_down_the_layers():
    """Kills: a lower layer of lsf_core importing a higher one (e.g. models importing runtime, face importing
    models); lsf_core importing lsf_ros; anything importing the command line."""
    bad = []
    for module, targets in _graph().items():
        for t in targets:
            if module.startswith("lsf_core") and t.startswith("lsf_ros"):
                bad.append(f"{module} -> {t} (lsf_core never imports lsf_ros)")
            elif module.startswith("lsf_core") and t.startswith("lsf_core") and _layer(t) > _layer(module):
                bad.append(f"{module} -> {t}")
            elif t.startswith("lsf_core.cli") and not module.startswith("lsf_core.cli"):
                bad.append(f"{module} -> {t} (nothing imports the command line)")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_packages_say_what_lives_there_and_what_they_may_import():
    missing = []
    for init in sorted((REPO / "lsf_core").glob("*/__init__.py")) + sorted((REPO / "lsf_ros").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if init.parent.name in ("lsf_ros",):
            continue
        if "What lives here" not in doc and "lives here" not in doc or "import" not in doc:
            missing.append(str(init.relative_to(REPO)))
    assert not missing, f"package docstrings must say what lives there and what it may import: {missing}"


def test_few_modules_at_the_top_of_lsf_core():
    top = sorted(p.name for p in (REPO / "lsf_core").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_long_file_without_a_reason():
    long = []
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            n = len(path.read_text().splitlines())
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            if n > MAX_LINES and "Long because" not in doc:
                long.append(f"{path.relative_to(REPO)} ({n} lines)")
    assert not long, f"files over {MAX_LINES} lines without a reason in their docstring: {long}"


@pytest.mark.parametrize("module", ["lsf_core.runtime.streaming", "lsf_core.face.render", "lsf_ros.animator_node"])
def test_the_checker_sees_lazy_imports(module):
    """The graph includes imports inside functions (the checker itself must not be blind)."""
    graph = _graph()
    assert graph[module], module
