"""`farm run`'s embedded Ray (no RAY_ADDRESS, as scripts/demo.sh runs it) starts whether
token authentication is asked for, refused, or left to Ray's default, on a machine that
has never made a token."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import ray
from farm.commands.run import connect
connect(1)
print("answer", ray.get(ray.remote(lambda: 6 * 7).remote()))
"""


@pytest.mark.parametrize("auth", ["token", "disabled", None])
def test_the_embedded_ray_starts_whatever_the_auth_mode(auth, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"HOME": str(tmp_path)} | ({"RAY_AUTH_MODE": auth} if auth else {})
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0 and "answer 42" in proc.stdout, proc.stderr[-2000:]
