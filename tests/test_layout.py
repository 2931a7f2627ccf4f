"""The package layering of pyproject.toml's import-linter contract holds, and has teeth."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True,
                          text=True, timeout=300)


def test_the_tree_keeps_its_layers():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_import_up_the_layers_fails_and_is_named(tmp_path):
    for package in ("farm", "encoders", "actors"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    exact = tmp_path / "farm" / "model" / "exact.py"
    lines = exact.read_text().count("\n")
    exact.write_text(exact.read_text() + "from farm.verify import local  # noqa: E402\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0
    assert f"farm.model.exact -> farm.verify.local (l.{lines + 1})" in result.stdout
