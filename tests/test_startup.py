"""Process start-up: a `farm` command imports what it uses, not what the other commands use.

Each case runs in a fresh interpreter, as a user's `farm ...` does, and reads back which
packages it imported."""

import json
import subprocess
import sys

from farm.model.checkpoint import Checkpoint, save_checkpoint

HEAVY = ("torch", "ray", "z3", "cvc5", "pyarrow", "matplotlib", "sympy")
PROBE = f"""
import json, sys
from farm.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r}))))
"""


def heavy_imports(*argv: str) -> set[str]:
    """The HEAVY packages a fresh `farm argv...` process has imported when it ends."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                          text=True, check=True, timeout=300)
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_help_and_light_commands_import_no_heavy_package(tmp_path):
    assert heavy_imports("--help") == set()
    assert heavy_imports("keygen", "--help") == set()
    assert heavy_imports("keygen", "--out-dir", str(tmp_path / "keys")) == set()
    assert (tmp_path / "keys").is_dir()  # it ran, not just parsed


def test_verify_imports_no_ray_and_no_plotting():
    assert heavy_imports("verify", "--help").isdisjoint({"ray", "matplotlib"})


def test_loading_a_checkpoint_does_not_import_dynamo(tmp_path, trained):
    """Checking a checkpoint's shapes once built the model on the meta device, whose
    init imports torch._dynamo and sympy: seconds of every verify."""
    save_checkpoint(Checkpoint.from_model(trained.model), tmp_path / "ckpt")
    probe = ("import sys\nfrom farm.model.checkpoint import load_checkpoint\n"
             f"load_checkpoint({str(tmp_path / 'ckpt')!r})\n"
             "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=300)
    assert proc.stdout.strip() == "[]"
