"""The tree is the architecture: packages by stage, and no import climbs from a lower stage to a higher one.

The stages, from the ground up: the ground modules (``digest/*.py``), ``sources``, ``matching``,
``state``, ``mail``, ``cycle``, ``web`` and ``ops``. A module may import its own package and any
package below it, at module level or inside a function alike.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "digest"
STAGES = ("", "sources", "matching", "state", "mail", "cycle", "web", "ops")
MAX_LAYERS = 7


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every digest module this file imports, wherever in the file the import is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return {name for name in found if name in known}


def stage_of(module: str) -> int:
    if module == "digest.__main__":  # ``python -m digest``: the command line
        return STAGES.index("ops")
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES):
        return STAGES.index(parts[1])
    return 0


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(path, known) - {name, "digest"} for name, path in found.items()}


def test_no_import_climbs_to_a_higher_stage() -> None:
    climbs = [
        f"{module} ({STAGES[stage_of(module)] or 'ground'}) imports {target} ({STAGES[stage_of(target)]})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if stage_of(target) > stage_of(module)
    ]
    assert climbs == []


def test_every_module_sits_in_a_stage_package() -> None:
    ground = {name for name in modules() if stage_of(name) == 0 and name.count(".") == 1}
    assert ground <= {
        "digest.__main__",
        "digest.clock",
        "digest.errors",
        "digest.models",
        "digest.paths",
        "digest.retry",
        "digest.settings",
        "digest.signing",
        "digest.text",
    }


def stage_graph(edges: dict[str, set[str]]) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {stage: set() for stage in range(len(STAGES))}
    for module, targets in edges.items():
        found[stage_of(module)].update(stage_of(target) for target in targets if stage_of(target) != stage_of(module))
    return found


def layers(edges: dict[int, set[int]]) -> int:
    """The longest chain of imports between stages, counted in stages (no climbs, so no cycles)."""

    @cache
    def depth(stage: int) -> int:
        return 1 + max((depth(lower) for lower in edges[stage] if lower < stage), default=0)

    return max(depth(stage) for stage in edges)


def test_the_stages_form_at_most_seven_layers() -> None:
    assert layers(stage_graph(graph())) <= MAX_LAYERS


def test_matching_knows_nothing_of_mail_and_the_web_nothing_of_the_cycle_wiring() -> None:
    edges = graph()
    assert not {
        t for m, t_ in edges.items() if m.startswith("digest.matching") for t in t_ if t.startswith("digest.mail")
    }
    assert "digest.cycle.run" not in set().union(*(t for m, t in edges.items() if m.startswith("digest.web")))


def test_imports_name_the_module_they_come_from() -> None:
    """A relative import would slip past the stage check above, which reads absolute names."""
    relative = [
        f"{module_name(path)}:{node.lineno}"
        for path in modules().values()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert relative == []


def test_every_package_is_installed() -> None:
    """The image installs the project (not an editable checkout): a package missing from
    pyproject's list is missing there, and every command that imports it fails only in the
    container (as ``digest.state.postgres`` once did)."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(PACKAGE.parent).parts)
        for init in PACKAGE.rglob("__init__.py")
        if "__pycache__" not in init.parts and "templates" not in init.parts
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
