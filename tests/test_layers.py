"""The layering that holds today, proven by walking every import statement of the library (lazy ones inside
functions included): the library never imports its CLI or the experiments; parameterizations and kernels know no
method, driver or application; models know no method."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "jaxdd"


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in ("jaxdd", "experiments", "theory")}


def _modules(sub: str = "") -> dict[str, set[str]]:
    root = PKG / sub if sub else PKG
    return {str(p.relative_to(PKG.parent)): _imports(p) for p in root.rglob("*.py")}


def _offenders(mods: dict[str, set[str]], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for mod, imps in mods.items():
        hits = sorted(i for i in imps if any(i == f or i.startswith(f + ".") for f in forbidden))
        if hits:
            bad[mod] = hits
    return bad


def test_the_library_never_imports_the_cli_or_the_experiments():
    lib = {m: i for m, i in _modules().items() if not m.startswith("jaxdd/cli/")}
    assert lib and _offenders(lib, ("jaxdd.cli", "experiments")) == {}


def test_parameterizations_and_kernels_know_no_method_or_driver():
    upper = ("jaxdd.objectives", "jaxdd.distill", "jaxdd.pipeline", "jaxdd.methods", "jaxdd.evaluate",
             "jaxdd.checkpoint", "jaxdd.multi", "jaxdd.continual", "jaxdd.cli")
    assert _offenders(_modules("synthetic"), upper) == {}
    assert _offenders(_modules("ops"), upper + ("jaxdd.models", "jaxdd.train", "jaxdd.data")) == {}
    assert _offenders(_modules("models"), upper + ("jaxdd.train",)) == {}


def test_the_walk_sees_lazy_imports():
    """The checker itself: a function-level import counts (so the tests above can fail)."""
    imps = _imports(PKG / "pipeline.py")
    assert "jaxdd.checkpoint" in imps and any(m.startswith("jaxdd.synthetic") for m in imps)
