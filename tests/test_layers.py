"""The layering, proven by walking every import statement of the library (lazy ones inside functions included).

Layers, bottom to top (a module imports only from its own layer or below):
types/fileio/hostmem, data, ops, models, augment, train, synthetic, objectives, sharding, checkpoint, methods,
evaluate, distill (the driver), protocols, api, plots, cli. The tests: the library never imports its CLI or the
experiments; no import cycle among the library's modules; parameterizations and kernels know no method or driver;
objectives know neither the driver, evaluation, checkpointing, the registry nor the application; the driver knows no
protocol or API."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "jaxdd"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module named by an import in ``path`` (absolute names). ``from a import b`` gives a.b when a/b.py
    exists (a submodule), else a (a name defined in a)."""
    out = set()
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                sub = PKG.parent / (base.replace(".", "/") + "/" + a.name)
                out.add(f"{base}.{a.name}" if sub.with_suffix(".py").exists() or sub.is_dir() else base)
    return {m for m in out if m.split(".")[0] in ("jaxdd", "experiments", "theory")}


def _modules(sub: str = "") -> dict[str, set[str]]:
    root = PKG / sub if sub else PKG
    return {_module_name(p): _imports(p) for p in root.rglob("*.py")}


def _offenders(mods: dict[str, set[str]], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for mod, imps in mods.items():
        hits = sorted(i for i in imps if any(i == f or i.startswith(f + ".") for f in forbidden))
        if hits:
            bad[mod] = hits
    return bad


def _graph(mods: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module -> the library modules it imports (a name resolves to its longest existing module prefix). Edges to
    the top package ``jaxdd`` (the public facade that re-exports) are left out: every module may read __version__."""
    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    return {m: {r for r in map(resolve, imps) if r and r != m and r != "jaxdd"} for m, imps in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _library() -> dict[str, set[str]]:
    return {m: i for m, i in _modules().items() if not (m == "jaxdd.cli" or m.startswith("jaxdd.cli."))}


def test_the_library_never_imports_the_cli_or_the_experiments():
    lib = _library()
    assert len(lib) > 40 and _offenders(lib, ("jaxdd.cli", "experiments")) == {}


def test_no_import_cycle_among_the_library_modules():
    graph = _graph(_library())
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    """The checker itself: a cycle through three modules (and one through a lazy import) is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _graph(_library())
    graph["jaxdd.train"] = graph["jaxdd.train"] | {"jaxdd.distill"}  # distill imports train: now a cycle
    assert any("jaxdd.train" in c and "jaxdd.distill" in c for c in _cycles(graph))


def test_parameterizations_and_kernels_know_no_method_or_driver():
    upper = ("jaxdd.objectives", "jaxdd.distill", "jaxdd.api", "jaxdd.methods", "jaxdd.evaluate",
             "jaxdd.checkpoint", "jaxdd.protocols", "jaxdd.cli")
    assert _offenders(_modules("synthetic"), upper) == {}
    assert _offenders(_modules("ops"), upper + ("jaxdd.models", "jaxdd.train", "jaxdd.data")) == {}
    assert _offenders(_modules("models"), upper + ("jaxdd.train",)) == {}
    assert _offenders({m: i for m, i in _library().items() if m in ("jaxdd.train", "jaxdd.augment")}, upper) == {}


def test_objectives_know_no_driver_evaluation_checkpointing_or_application():
    """A method receives what it needs (a teacher, an expert buffer) as arguments; loading them from a directory is
    the registry's (jaxdd.methods.builtin) or the API's job."""
    upper = ("jaxdd.distill", "jaxdd.evaluate", "jaxdd.checkpoint", "jaxdd.methods", "jaxdd.api",
             "jaxdd.protocols", "jaxdd.sharding", "jaxdd.plots", "jaxdd.cli")
    assert _offenders(_modules("objectives"), upper) == {}


def test_the_driver_knows_no_protocol_or_api():
    mods = {m: i for m, i in _library().items() if m in ("jaxdd.distill", "jaxdd.evaluate", "jaxdd.methods",
                                                          "jaxdd.methods.registry", "jaxdd.methods.builtin")}
    assert len(mods) == 5 and _offenders(mods, ("jaxdd.protocols", "jaxdd.api", "jaxdd.cli")) == {}


def test_the_walk_sees_lazy_and_relative_imports():
    """The checker itself: a function-level import counts (so the tests above can fail)."""
    imps = _imports(PKG / "distill.py")
    assert "jaxdd.checkpoint" in imps  # imported inside _drive
    assert "jaxdd.methods.registry" in _imports(PKG / "methods" / "__init__.py")
