"""requirements.lock covers pyproject.toml's ranges, and this environment is exactly it.

scripts/setup.sh installs from the lock, so a fresh clone gets the versions the tests
passed with; a dependency added to pyproject.toml without refreshing the lock
(scripts/lock.sh) fails here rather than floating to whatever is newest.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith(("#", " ")):
            requirement = Requirement(line)
            [spec] = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def test_the_lock_pins_every_dependency_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    for text in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "torch":  # pinned exactly in pyproject, installed first (scripts/lock.sh)
            assert str(requirement.specifier) == "==2.13.0"
            continue
        assert name in pins, f"{name} is not in requirements.lock: run scripts/lock.sh"
        assert requirement.specifier.contains(pins[name]), (text, pins[name])


def test_this_environment_runs_exactly_the_locked_versions():
    installed = {canonicalize_name(name): importlib.metadata.version(name)
                 for name in locked()}
    assert installed == locked()
