"""The package layout is the architecture: every import flows from a higher layer to a lower one, never back."""

from __future__ import annotations

import ast
from pathlib import Path

import cnnkit

ROOT = Path(cnnkit.__file__).parent
# Lowest first. A package may import itself and anything on a lower rank; packages on one rank are independent.
RANKS = {
    "core": 0, "tf": 1, "layers": 2, "models": 3, "data": 3, "store": 4, "train": 5, "analysis": 6,
    "interop": 7, "explore": 8, "api": 9, "cli": 10, "__main__": 11,
}


def package_of(module: str) -> str:
    """'cnnkit.train.loop' -> 'train'; the package's own __init__ (the public API) -> 'api'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "api"


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every cnnkit module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cnnkit":
            if node.module == "cnnkit":  # `from cnnkit import tf` names a subpackage, or the API's own names
                found.update(f"cnnkit.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "cnnkit")
    return found


def edges() -> list[tuple[str, str, str]]:
    """(importing module, its package, imported package) for every cnnkit import in the source tree."""
    result = []
    for path in sorted(ROOT.rglob("*.py")):
        here = module_name(path)
        for target in imported_modules(path):
            result.append((here, package_of(here), package_of(target)))
    return result


def test_every_module_belongs_to_a_ranked_package() -> None:
    unknown = {package for _, package, _ in edges()} | {target for _, _, target in edges()}
    assert unknown <= set(RANKS), sorted(unknown - set(RANKS))


def test_imports_flow_downwards_only() -> None:
    upward = [f"{module} ({package}) imports {target}" for module, package, target in edges()
              if package != target and RANKS[target] >= RANKS[package]]
    assert upward == []


def test_no_package_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for _, package, target in edges():
        if package != target:
            graph.setdefault(package, set()).add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
                   for nxt in graph.get(start, ()))

    assert [p for p in graph if reaches(p, p, {p})] == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a layer module importing the trainer is found."""
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from cnnkit.train.loop import fit\n")
    assert imported_modules(source) == {"cnnkit.train.loop"}
    assert RANKS[package_of("cnnkit.train.loop")] > RANKS[package_of("cnnkit.layers.conv")]
