"""Layers import downward only, read from the source (every import, lazy ones inside functions too).

edges (app.py, cli.py, ui/, bench/) -> playground/ -> backends/ -> core/; tinymodels/ builds the
demo models beside backends/. core/ is library-free rules and imports none of the project's other
packages.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "backends", "tinymodels", "playground", "ui", "bench")
EDGES = ("ui", "bench", "cli", "app")
# package -> the project's packages it must never import
FORBIDDEN = {
    "core": {"backends", "tinymodels", "playground", *EDGES},
    "backends": {"tinymodels", "playground", *EDGES},
    "tinymodels": {"playground", *EDGES},
    "playground": set(EDGES),
}
# heavy model libraries core/ must not import either (its rules are library-free)
CORE_LIBRARIES = {"torch", "transformers", "llama_cpp", "gptqmodel", "gradio", "huggingface_hub", "openai"}


def package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def source_files() -> list[Path]:
    files = [ROOT / "app.py", ROOT / "cli.py"]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def package_imports() -> dict[str, dict[str, set[str]]]:
    """package -> imported top-level project package -> files that import it."""
    project = set(PACKAGES) | {"cli", "app"}
    graph: dict[str, dict[str, set[str]]] = {}
    for path in source_files():
        here = package_of(path)
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in project and top != here:
                graph.setdefault(here, {}).setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return graph


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_downward_only(package):
    graph = package_imports()
    wrong = {target: sorted(files) for target, files in graph.get(package, {}).items() if target in FORBIDDEN[package]}
    assert not wrong, f"{package}/ imports layers above it: {wrong}"


def test_no_import_circle_between_packages():
    graph = {here: set(targets) for here, targets in package_imports().items()}

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen:
                found = cycle_from(start, nxt, (*seen, nxt))
                if found:
                    return found
        return None

    for package in graph:
        cycle = cycle_from(package, package, (package,))
        assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_core_is_library_free():
    for path in sorted((ROOT / "core").rglob("*.py")):
        libraries = {m.split(".")[0] for m in imported_modules(path)} & CORE_LIBRARIES
        assert not libraries, f"{path.relative_to(ROOT)} imports {sorted(libraries)}"


def test_the_check_catches_a_violation(tmp_path, monkeypatch):
    """The checker itself: a core module importing the UI is reported."""
    fake = tmp_path / "core" / "bad.py"
    fake.parent.mkdir()
    fake.write_text("from ui.blocks import build_app\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("core", "ui"))
    (tmp_path / "ui").mkdir()
    (tmp_path / "app.py").write_text("")
    (tmp_path / "cli.py").write_text("")
    graph = package_imports()
    assert graph["core"]["ui"] == {"core/bad.py"}
