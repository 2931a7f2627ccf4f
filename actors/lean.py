"""Seam for the Lean checker: run a given callable where the Lean toolchain lives.

The certificate issue owns what the check is (`lake` on a generated file, its
parsing, its verdict); the farm only needs to place it on a node that has Lean,
declared by the custom resource `lean` (`ray start --resources='{"lean": 1}'`).
Nothing here produces or interprets a result: the callable's return value is
passed back unchanged. `remote_lean_check` is the certificate's callable placed
this way (`farm.trust.certificate.issue(..., lean=remote_lean_check)`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray

from farm.trust.certificate import lean_check
from farm.trust.lean_export import LakeOutcome, LeanExport


class LeanRunner:
    def run(self, check: Callable[..., Any], *args: Any) -> Any:
        return check(*args)


def lean_actor() -> Any:
    """One runner on a node offering a `lean` slot."""
    return ray.remote(LeanRunner).options(num_cpus=1, resources={"lean": 1}).remote()


def remote_lean_check(export: LeanExport, timeout_s: float = 3600.0) -> LakeOutcome:
    """`lean_check` on a `lean` node; "not run" when no node offers one (it would wait forever)."""
    if not ray.cluster_resources().get("lean"):
        return LakeOutcome("not run", "no Lean toolchain (no Ray node offers the 'lean' "
                                      "resource)")
    actor = lean_actor()
    try:
        return ray.get(actor.run.remote(lean_check, export, timeout_s))
    finally:
        ray.kill(actor)
