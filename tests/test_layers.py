"""The package layers of docs/ARCHITECTURE.md, enforced: a package imports only from its own layer or below.

    common  <-  data  <-  tasks  <-  inference  <-  tracking  <-  pipelines  <-  reporting  <-  cli

Lazy imports (inside functions) count too: they are dependencies all the same, only deferred.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = ["common", "data", "tasks", "inference", "tracking", "pipelines", "reporting", "cli"]
# Deliberate upward edges, each with its reason (keep this list short).
EXCEPTIONS = {
    # The documented layout puts ConfigManager in src/common, yet the schema it validates against is owned by each task
    # (src/tasks/<family>/schema.py); it finds them through src.tasks' table, lazily.
    ("src/common/config_manager.py", "tasks"),
    # StreetScenePipeline is the one documented Python entry (src/pipelines/pipeline.py): a facade over every
    # command, including the leaderboard.
    ("src/pipelines/pipeline.py", "reporting"),
}


def imported_packages(path: Path):
    """(line, package) for every `src.<package>` this module imports, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "src" else [])
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "src" and len(parts) > 1:
                yield node.lineno, parts[1]


def modules():
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_package_has_a_layer():
    packages = {p.relative_to(SRC).parts[0] for p in modules() if len(p.relative_to(SRC).parts) > 1}
    assert packages <= set(LAYERS), f"packages without a layer in tests/test_layers.py: {packages - set(LAYERS)}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_from_its_layer_or_below(path):
    rel = path.relative_to(SRC)
    if len(rel.parts) == 1:
        return  # src/__init__.py
    own = LAYERS.index(rel.parts[0])
    shown = f"src/{rel.as_posix()}"
    upward = [f"line {line}: src.{pkg}" for line, pkg in imported_packages(path)
              if pkg in LAYERS and LAYERS.index(pkg) > own and (shown, pkg) not in EXCEPTIONS]
    assert not upward, f"{shown} ({rel.parts[0]}) imports from a higher layer: {upward}"


def test_the_layer_check_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from src.cli.main import main\n    import src.pipelines.runner\n")
    assert sorted(pkg for _, pkg in imported_packages(module)) == ["cli", "pipelines"]


def test_exceptions_are_still_needed():
    for path, pkg in EXCEPTIONS:
        assert pkg in {p for _, p in imported_packages(SRC.parent / path)}, f"{path} no longer imports src.{pkg}"
