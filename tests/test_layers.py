"""Imports point one way: ``flowlens_dagster`` -> ``assets`` -> ``ingest`` (README "Layout").

Every module of the three packages is parsed (not imported) and each import it makes, at the top
or inside a function, relative or absolute, must name its own layer or a lower one. ``ingest``
also stays free of Dagster, so the daemon starts without it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"ingest": 0, "assets": 1, "flowlens_dagster": 2}  # a package may import its own layer and lower ones
FORBIDDEN_THIRD_PARTY = {"ingest": {"dagster", "dagster_webserver", "dagster_postgres"}}


def modules() -> list[tuple[str, Path]]:
    found = []
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def imported(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def violations(module: str, path: Path) -> list[str]:
    layer_of = module.split(".")[0]
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    bad = []
    for line, name in imported(module, path):
        top = name.split(".")[0]
        if top in LAYERS and LAYERS[top] > LAYERS[layer_of]:
            bad.append(f"{where}:{line}: {layer_of} imports {name} (a higher layer)")
        if top in FORBIDDEN_THIRD_PARTY.get(layer_of, ()):
            bad.append(f"{where}:{line}: {layer_of} imports {name}")
    return bad


def test_every_package_is_scanned() -> None:
    names = {module for module, _ in modules()}
    assert {"ingest.worker", "assets.partitions", "assets.resources", "flowlens_dagster.definitions"} <= names


@pytest.mark.parametrize("package", list(LAYERS))
def test_imports_point_one_way(package: str) -> None:
    bad = [v for module, path in modules() if module.split(".")[0] == package for v in violations(module, path)]
    assert not bad, "imports against flowlens_dagster -> assets -> ingest:\n" + "\n".join(bad)


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a lower layer importing a higher one, absolutely, relatively or lazily, is reported."""
    source = tmp_path / "x.py"
    source.write_text("import assets.keys\n\ndef f():\n    from flowlens_dagster.cli import main\n")
    assert len(violations("ingest.x", source)) == 2
    source.write_text("from ..bench import report\n")
    relative = violations("assets.enrich.x", source)  # resolves to assets.bench: same layer, allowed
    assert relative == []
    source.write_text("from ingest.window import WINDOW\nimport dagster as dg\n")
    assert violations("assets.x", source) == []
    assert len(violations("ingest.x", source)) == 1  # ingest stays free of Dagster
