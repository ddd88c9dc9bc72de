"""The package's shape: an acyclic, shallow import graph of small modules and short functions.

Nothing is imported: every ``.py`` file under the installed ``dramatiq_bbo`` directory is
parsed, so a module that cannot even be imported (because of a cycle) is still examined.
Edges are counted module → module as Python resolves them, which is where cycles hide:

- ``import a.b.c`` and ``from a.b import c`` (``c`` a submodule) count as importing ``a.b.c``;
- ``from a.b import name`` (``name`` not a submodule) counts as importing ``a.b`` — its own
  module, or ``a/b/__init__.py`` when ``a.b`` is a package;
- imports inside functions and methods and under ``if TYPE_CHECKING:`` count too for cycles: a
  lazy import still couples the two modules, and a type-only one still makes them move
  together; layers are measured on what runs (type-only imports left out) among the library's
  own modules (the CLI, the demo, the test servers and the web page stand above it);
- relative imports are resolved against the importing module's package (a package's
  ``__init__`` is its own package).

So ``pkg/__init__.py`` importing ``pkg.a`` while ``pkg/a.py`` does ``from . import Name``
(``Name`` defined in ``__init__``) is the cycle ``pkg → pkg.a → pkg``, while
``from . import b`` in ``pkg/a.py`` is the edge ``pkg.a → pkg.b`` only.

The walker itself is tested on a small synthetic package built in a temporary directory.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import tokenize
from collections import deque
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "dramatiq_bbo"
MAX_LAYERS = 11
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
REPOSITORY = Path(__file__).resolve().parents[2]

#: what a reader could not follow: references to documents that are not in the repository
OUTSIDE_REFERENCES = [
    # each spelled with a one-letter class so that this file does not cite them itself
    re.compile(r"\bDESIG[N]\b"),  # the design file by name, its sections, its formulas
    re.compile(r"design documen[t]", re.IGNORECASE),
    re.compile(r"\.\./share[d]"),  # the folder beside the repository
    re.compile(r"\bseed[s]\b", re.IGNORECASE),
]

Graph = dict[str, set[str]]


# -- the walker ------------------------------------------------------------------------------


def package_directory(name: str = PACKAGE) -> Path:
    """The installed package's directory, found without importing (executing) it."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def module_files(directory: Path, name: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name → file; a package's ``__init__.py`` carries the package's name."""
    modules = {}
    for path in sorted(directory.rglob("*.py")):
        parts = list(path.relative_to(directory).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([name, *parts])] = path
    return modules


def _base_package(module: str, path: Path, level: int) -> str:
    """The package a relative import of ``level`` dots starts from."""
    parts = module.split(".")
    if path.name != "__init__.py":
        parts.pop()
    return ".".join(parts[: len(parts) - (level - 1)])


def _imported(module: str, path: Path, node: ast.AST, known: set[str]) -> Iterator[str]:
    """The package modules one import statement makes ``module`` depend on."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
        for target in targets:
            while target and target not in known:  # the deepest module that exists
                target = target.rpartition(".")[0]
            if target:
                yield target
    elif isinstance(node, ast.ImportFrom):
        source = node.module or ""
        if node.level:
            base = _base_package(module, path, node.level)
            source = f"{base}.{source}" if source else base
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            if submodule in known:
                yield submodule
            elif source in known:
                yield source


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """The nodes under ``if TYPE_CHECKING:`` blocks: never executed, only read by checkers."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def import_graph(modules: dict[str, Path], *, runtime_only: bool = False) -> Graph:
    """Every module → the package modules it imports, anywhere in its body (with
    ``runtime_only``, leaving out the imports under ``if TYPE_CHECKING:``)."""
    known = set(modules)
    graph: Graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skipped = _type_checking_nodes(tree) if runtime_only else set()
        graph[module] = {
            target
            for node in ast.walk(tree)
            if id(node) not in skipped
            for target in _imported(module, path, node, known)
            if target != module
        }
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components, iteratively (no recursion limit on a long chain)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def _shortest_path(graph: Graph, start: str, goal: str, allowed: set[str]) -> list[str]:
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path: list[str] = []
            step: str | None = node
            while step is not None:
                path.append(step)
                step = previous[step]
            return path[::-1]
        for child in sorted(graph[node] & allowed):
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"no path {start} → {goal} inside its component")


def find_cycles(graph: Graph) -> list[list[str]]:
    """For every import edge that closes a loop, the shortest cycle through it.

    Every edge worth cutting appears in at least one listed cycle, without enumerating all
    elementary cycles (exponential in a tangled package). Each cycle is a chain that starts
    and ends on the same module, rotated to start at its smallest name, duplicates removed.
    """
    cycles: set[tuple[str, ...]] = set()
    for component in strongly_connected(graph):
        members = set(component)
        for source in component:
            for target in sorted(graph[source] & members):
                loop = [source, *_shortest_path(graph, target, source, members)[:-1]]
                start = loop.index(min(loop))
                cycles.add(tuple(loop[start:] + loop[:start]))
    return [[*cycle, cycle[0]] for cycle in sorted(cycles)]


def longest_chain(graph: Graph) -> list[str]:
    """The longest import chain, importer first; modules of one cycle count as one layer."""
    component_of = {m: tuple(c) for c in strongly_connected(graph) for m in c}
    depth: dict[tuple[str, ...], list[str]] = {}

    def chain_from(component: tuple[str, ...]) -> list[str]:
        if component not in depth:
            below: list[str] = []
            for member in component:
                for target in graph[member]:
                    if component_of[target] != component:
                        candidate = chain_from(component_of[target])
                        below = max(below, candidate, key=len)
            label = component[0] if len(component) == 1 else "{" + ", ".join(component) + "}"
            depth[component] = [label, *below]
        return depth[component]

    chains = [chain_from(component_of[module]) for module in sorted(graph)]
    return max(chains, key=len, default=[])


def long_modules(modules: dict[str, Path], limit: int) -> list[str]:
    counts = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in modules.items()}
    return [f"{m}: {n} lines" for m, n in sorted(counts.items()) if n > limit]


def long_functions(modules: dict[str, Path], limit: int) -> list[str]:
    """Functions and methods longer than ``limit``, from the ``def`` line to the last line."""
    found = []
    for module, path in sorted(modules.items()):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{module}.{node.name} (line {node.lineno}): {length} lines")
    return found


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every docstring and comment of a Python file."""
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    yield body[0].lineno, body[0].value.value
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


def outside_references(path: Path, texts: Iterator[tuple[int, str]]) -> list[str]:
    found = []
    for first_line, text in texts:
        for offset, line in enumerate(text.splitlines()):
            if any(pattern.search(line) for pattern in OUTSIDE_REFERENCES):
                where = path.relative_to(REPOSITORY) if path.is_relative_to(REPOSITORY) else path
                found.append(f"{where}:{first_line + offset}: {line.strip()}")
    return found


# -- the package -------------------------------------------------------------------------------


def _package() -> tuple[dict[str, Path], Graph]:
    modules = module_files(package_directory())
    return modules, import_graph(modules)


def test_no_package_module_imports_itself_through_a_cycle() -> None:
    _, graph = _package()
    cycles = find_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(
        " → ".join(cycle) for cycle in cycles
    )


#: programs and tools built on the library's public API, not layers of it: the CLI, the demo
#: (written as a user would, against ``import dramatiq_bbo``), the test servers and the web
#: page (a surface over the command layer, like the CLI)
APPLICATIONS = ("cli", "demo", "testing", "web")


def library_layers(modules: dict[str, Path]) -> Graph:
    """The import graph the layer rule measures: what runs (a type-only import moves no code
    above another), among the library's own modules."""
    outside = tuple(f"{PACKAGE}.{name}" for name in APPLICATIONS)
    graph = import_graph(modules, runtime_only=True)
    return {
        module: {target for target in targets if not target.startswith(outside)}
        for module, targets in graph.items()
        if not module.startswith(outside)
    }


def test_the_library_import_graph_is_at_most_eleven_layers_deep() -> None:
    modules, _ = _package()
    chain = longest_chain(library_layers(modules))
    assert len(chain) <= MAX_LAYERS, (
        f"{len(chain)} layers (at most {MAX_LAYERS}); the longest chain, importer first:\n"
        + "\n → ".join(chain)
    )


def test_no_package_module_is_over_four_hundred_lines() -> None:
    modules, _ = _package()
    offenders = long_modules(modules, MAX_MODULE_LINES)
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def test_no_function_or_method_is_over_sixty_lines() -> None:
    modules, _ = _package()
    offenders = long_functions(modules, MAX_FUNCTION_LINES)
    assert not offenders, f"over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_docs_readme_docstrings_and_comments_cite_nothing_outside_the_repository() -> None:
    found = []
    for path in [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").rglob("*.md"))]:
        found += outside_references(path, enumerate([path.read_text(encoding="utf-8")], 1))
    directory = package_directory()
    for path in sorted(directory.rglob("*.sql")):  # named queries: their text is their comments
        found += outside_references(path, enumerate([path.read_text(encoding="utf-8")], 1))
    for path in sorted(directory.rglob("*.py")):
        found += outside_references(path, prose(path))
    assert not found, "references a reader cannot follow:\n" + "\n".join(found)


# -- the walker on a synthetic package --------------------------------------------------------


SYNTHETIC = {
    "__init__.py": "from .a import A\nfrom . import sub\n",
    # `from . import b`: an edge to the submodule b only, not to pkg/__init__.
    "a.py": "from . import b\n\nA = 1\n",
    "b.py": (
        "from typing import TYPE_CHECKING\n\n"
        "if TYPE_CHECKING:\n    from .sub.deep import D\n\n"
        "def later():\n    from pkg.c import C\n    return C\n"
    ),
    "c.py": "import pkg.sub.deep\n\nC = 1\n",
    "sub/__init__.py": "",
    # `from .. import A`: A is a name in pkg/__init__, so this is the edge deep → pkg.
    "sub/deep.py": "from .. import A\n\nclass D:\n    @property\n    def method(self):\n"
    + "        import os\n"
    + "        x = 1\n" * 60,
    "unrelated.py": "import os\nfrom collections import deque\n",
}


def _synthetic(tmp_path: Path) -> tuple[dict[str, Path], Graph]:
    for relative, text in SYNTHETIC.items():
        (tmp_path / "pkg" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / relative).write_text(text)
    modules = module_files(tmp_path / "pkg", "pkg")
    return modules, import_graph(modules)


def test_walker_resolves_relative_lazy_and_type_checking_imports_module_to_module(
    tmp_path: Path,
) -> None:
    modules, graph = _synthetic(tmp_path)
    assert set(modules) == {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.deep"} | {
        "pkg.unrelated"
    }
    assert graph == {
        "pkg": {"pkg.a", "pkg.sub"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.deep", "pkg.c"},  # under TYPE_CHECKING; inside a function
        "pkg.c": {"pkg.sub.deep"},
        "pkg.sub": set(),
        "pkg.sub.deep": {"pkg"},
        "pkg.unrelated": set(),
    }
    runtime = import_graph(modules, runtime_only=True)
    assert runtime["pkg.b"] == {"pkg.c"}  # the type-only import runs nothing
    assert {m: t for m, t in runtime.items() if m != "pkg.b"} == {
        m: t for m, t in graph.items() if m != "pkg.b"
    }


def test_walker_lists_every_cycle_as_a_module_chain(tmp_path: Path) -> None:
    _, graph = _synthetic(tmp_path)
    assert find_cycles(graph) == [
        ["pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub.deep", "pkg"],
        ["pkg", "pkg.a", "pkg.b", "pkg.sub.deep", "pkg"],
    ]
    graph["pkg.sub.deep"] = set()  # cut the edge back to __init__: no cycle left
    assert find_cycles(graph) == []


def test_walker_counts_layers_along_the_longest_chain(tmp_path: Path) -> None:
    _, graph = _synthetic(tmp_path)
    graph["pkg.sub.deep"] = set()
    assert longest_chain(graph) == ["pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub.deep"]
    graph["pkg.sub.deep"] = {"pkg"}  # the cycle collapses into one layer
    assert longest_chain(graph) == ["{pkg, pkg.a, pkg.b, pkg.c, pkg.sub.deep}", "pkg.sub"]


def test_walker_measures_modules_and_functions_from_the_def_line(tmp_path: Path) -> None:
    modules, _ = _synthetic(tmp_path)
    assert long_modules(modules, 60) == ["pkg.sub.deep: 66 lines"]
    # decorated: counted from the `def` line (5), not from `@property` (4)
    assert long_functions(modules, 60) == ["pkg.sub.deep.method (line 5): 62 lines"]
    assert long_functions(modules, 62) == []


def test_the_wheel_lists_every_package_of_the_source_tree() -> None:
    """pyproject.toml names the packages one by one: a package left out works in an editable
    install and is missing from the wheel, so the list is compared with the source tree."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(i.parent.relative_to(root).parts) for i in (root / PACKAGE).rglob("__init__.py")
    }
    assert found - set(setuptools["packages"]) == set(), "missing from pyproject.toml's list"
