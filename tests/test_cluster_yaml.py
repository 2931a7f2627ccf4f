"""cluster.yaml and cluster-aws.yaml pass Ray's own config preparation and schema check.

`ray up` runs `prepare_config` (provider defaults, node types) and then
`validate_config` (ray-schema.json); both run here without contacting any host.
The start commands are run through bash with `ray` stubbed, so the quoting of
the `solver` resource is checked as a shell would see it.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.commands import prepare_config
from ray.autoscaler._private.util import validate_config

ROOT = Path(__file__).resolve().parents[1]
DOC_RANGE = ipaddress.ip_network("192.0.2.0/24")  # TEST-NET-1: never a real host


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-aws.yaml"])
def test_ray_accepts_the_cluster_config(name):
    config = load(name)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    # a node type's own worker_setup_commands replace setup_commands there: it would not install
    assert not any("worker_setup_commands" in t for t in prepared["available_node_types"].values())
    setup = " && ".join(config["setup_commands"])
    assert "pip install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" \
        in setup
    # nodes, driver and job client run one Ray: the locked versions the tests passed with
    assert "pip install --quiet -r ~/farm/requirements.lock -e ~/farm" in setup
    assert f"ray[default]=={ray.__version__}\n" in (ROOT / "requirements.lock").read_text()
    # token authentication: the token made on the user's machine reaches every node, whose
    # shell asks for token auth (so `ray job submit` on the head works too)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "auth_token" in config["rsync_exclude"]
    assert "echo 'export RAY_AUTH_MODE=token' >> ~/.bashrc" in setup
    assert not any("0.0.0.0" in c for c in config["head_start_ray_commands"])  # no open dashboard
    assert {"keys", "*.pem", "runs"} <= set(config["rsync_exclude"])  # no signing key on nodes


def test_ray_rejects_a_broken_config():
    config = load("cluster.yaml")
    config["worker_start_ray_commands"] = [{"ray start": "--resources"}]  # a YAML slip
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def test_on_prem_hosts_are_placeholders():
    provider = load("cluster.yaml")["provider"]
    assert provider["type"] == "local"
    for ip in [provider["head_ip"], *provider["worker_ips"]]:
        assert ipaddress.ip_address(ip) in DOC_RANGE


def started_with(command: str) -> list[str]:
    """The arguments `ray` gets when bash runs `command` (ray, ulimit and nproc stubbed),
    then RAY_AUTH_MODE as `ray` sees it."""
    stub = ('ray() { printf "%s\\n" "$@" "RAY_AUTH_MODE=$RAY_AUTH_MODE"; }; ulimit() { :; }; '
            "nproc() { echo 6; }; RAY_HEAD_IP=192.0.2.10; ")
    out = subprocess.run(["bash", "-c", stub + command], capture_output=True, text=True,
                         check=True)
    return out.stdout.splitlines()


def test_workers_declare_one_solver_slot_per_core_and_the_head_none():
    config = load("cluster.yaml")
    [worker] = [c for c in config["worker_start_ray_commands"] if "start" in c]
    args = started_with(worker)
    [resources] = [a.split("=", 1)[1] for a in args if a.startswith("--resources=")]
    assert json.loads(resources) == {"solver": 6}
    assert "--address=192.0.2.10:6379" in args
    [head] = [c for c in config["head_start_ray_commands"] if "start" in c]
    assert not any("solver" in a for a in started_with(head))
    aws = load("cluster-aws.yaml")["available_node_types"]
    assert aws["solver"]["resources"]["solver"] == aws["solver"]["resources"]["CPU"]
    assert "solver" not in aws["head"]["resources"]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-aws.yaml"])
def test_every_node_starts_ray_with_token_authentication(name):
    config = load(name)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        [start] = [c for c in config[key] if " start " in c]
        assert started_with(start)[-1] == "RAY_AUTH_MODE=token", (key, start)
