"""The arrows point one way: nemobot → adapters → bot → storage, and localnemo beside bot.

Every ``import`` in every module of the product's packages (top level or inside a function) is checked
against one table of what each package may import from the others and from the platform libraries.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "storage", "adapters", "localnemo", "nemobot")
PLATFORM_LIBRARIES = ("telegram", "discord")
WATCHED = (*PACKAGES, *PLATFORM_LIBRARIES)

# Of the watched names, what each package may import. Nothing else, and no exceptions.
ALLOWED: dict[str, set[str]] = {
    "storage": {"storage"},
    "bot": {"bot", "storage"},
    "adapters": {"adapters", "bot", "storage", "telegram", "discord"},
    "localnemo": {"localnemo", "bot"},
    "nemobot": set(WATCHED),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_every_package_is_in_the_table() -> None:
    assert set(ALLOWED) == set(PACKAGES)
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_layers(package: str) -> None:
    wrong: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in _imports(path):
            root = name.split(".")[0]
            if root in WATCHED and root not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)
