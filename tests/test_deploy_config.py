"""The cluster files as Ray reads them: both through Ray's own offline checks (the schema and
cross-field checks `ray up` runs before it asks any cloud for anything; serve_config.yaml's schema is
checked in test_serve.py), and what the files promise an operator: the package comes from `make dist`'s wheel,
every command finds its program on the node, and no file overrides a setting of the nodes' environment.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.exceptions import ClickException
from ray.autoscaler._private.local.config import bootstrap_local
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_FILES = ("cluster.yaml", "cluster.aws.yaml")
VENV_BIN = "~/clera-venv/bin/"
# programs the package or the set-up install into ~/clera-venv: never on a node's PATH
VENV_PROGRAMS = {"ray", "serve", "clera", "pip", "python", "dotenv", "aws"}


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to a config before it talks to a cloud (commands._bootstrap_config): defaults
    filled in, the on-premise node list turned into a node type, then the schema and cross-field checks."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    if prepared["provider"]["type"] == "local":
        prepared = bootstrap_local(prepared)
    return prepared


def _commands(config: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [command for key in keys for command in config.get(key, [])]


def _programs(command: str) -> list[str]:
    """The programs a shell command line runs: the first word of each simple command (after any
    VAR=value), and the command `dotenv run --` runs."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    programs, expecting = [], True
    for word in lexer:
        if word in {"&&", "||", ";", "|", "--", "(", "{"}:
            expecting = True
        elif expecting and not re.match(r"^\w+=", word):
            programs.append(word)
            expecting = False
    return programs


def _bare_programs(command: str) -> set[str]:
    """Programs of ~/clera-venv a command calls by bare name (the PATH of a node does not have them)."""
    return {program for program in _programs(command) if program in VENV_PROGRAMS}


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_file_passes_rays_offline_validation(name: str) -> None:
    prepared = _checked(_load(name))
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types
    assert sum(t.get("min_workers", 0) for t in types.values()) <= prepared["max_workers"]


def test_aws_node_types_carry_the_placement_resources_and_bounds() -> None:
    prepared = _checked(_load("cluster.aws.yaml"))
    types = prepared["available_node_types"]
    assert types["head"]["resources"]["clera_gateway"] > 0 and types["head"]["max_workers"] == 0
    for node_type, resource in (("realtime", "clera_realtime"), ("agents", "clera_agents")):
        assert types[node_type]["resources"][resource] > 0
        assert 1 <= types[node_type]["min_workers"] <= types[node_type]["max_workers"] <= prepared["max_workers"]
        assert types[node_type]["resources"]["CPU"] > 0  # stated, so no AWS call is needed to learn it


def test_on_premise_workers_advertise_the_placement_resources() -> None:
    config = _load("cluster.yaml")
    assert config["auth"]["ssh_private_key"]  # the head's autoscaler reaches the workers with it
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    (worker_start,) = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert '"clera_gateway"' in head_start
    assert '"clera_realtime"' in worker_start and '"clera_agents"' in worker_start


@pytest.mark.parametrize(
    ("name", "breakage", "error"),
    [
        ("cluster.aws.yaml", lambda c: c.update(head_node_type="no-such-type"), ValueError),
        ("cluster.aws.yaml", lambda c: c.update(max_workers=1), ValueError),  # below the types' min_workers
        ("cluster.aws.yaml", lambda c: c.update(setup_comands=["true"]), jsonschema.ValidationError),
        ("cluster.aws.yaml", lambda c: c["available_node_types"]["agents"].update(min_workers="one"),
         jsonschema.ValidationError),
        ("cluster.yaml", lambda c: c["provider"].pop("head_ip"), ClickException),
        ("cluster.yaml", lambda c: c.update(available_node_types={"x": {}}), ClickException),
    ],
)
def test_a_broken_cluster_file_is_rejected(name: str, breakage: Any, error: type[Exception]) -> None:
    config = _load(name)
    breakage(config)
    with pytest.raises(error):
        _checked(config)


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_commands_call_the_programs_where_the_set_up_installs_them(name: str) -> None:
    for command in _commands(_load(name)):
        assert not _bare_programs(command), f"{command!r} calls {_bare_programs(command)} outside {VENV_BIN}"


def test_readme_commands_on_the_nodes_use_paths_that_exist_there() -> None:
    """Every `ray exec FILE '...'` of the README and of the cluster files' own comments."""
    texts = [(ROOT / "README.md").read_text()] + [
        (ROOT / name).read_text() for name in (*CLUSTER_FILES, "serve_config.yaml")
    ]
    remote = [found for text in texts for found in re.findall(r"ray exec \S+ '([^']+)'", text)]
    assert remote, "the README says how to deploy on a cluster"
    for command in remote:
        assert not _bare_programs(command), command
        for path in re.findall(r"~/clera/\S+", command):
            assert path.startswith("~/clera/dist/"), f"{path}: only ~/clera/dist is shipped to the nodes"


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_only_the_built_package_is_shipped(name: str) -> None:
    config = _load(name)
    assert config["file_mounts"] == {"~/clera/dist": "./dist"}
    assert {".venv", ".clera", ".env"} <= set(config["rsync_exclude"])
    assert not any(re.search(r"(?i)(secret|password|api_key)\s*[:=]\s*\S", c) for c in _commands(config))


def test_make_dist_builds_what_the_set_up_installs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(["make", "-s", "dist", f"DIST={dist}"], cwd=ROOT, check=True, capture_output=True, timeout=600)
    (wheel,) = dist.glob("*.whl")
    installs = [c for c in _commands(_load("cluster.yaml")) if "pip install" in c and ".whl" in c]
    for command in installs:
        (pattern,) = re.findall(r"~/clera/dist/(\S+\.whl)", command)
        assert wheel.match(pattern), f"{wheel.name} does not match {pattern}"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"serve_app.py", "cli.py", "engine/config.py", "actors/topology.py"} <= names
    # every package of the repository, subpackages included (a missing one only fails on the cluster)
    packages = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("*/**/__init__.py") if p.parts[len(ROOT.parts)] in
                ("engine", "brokerage", "agents", "gateway", "actors", "clera_cli")}
    assert packages and packages <= names, sorted(packages - names)
    assert any(n.startswith("engine/data/") and n.endswith(".csv.gz") for n in names)  # the replayed prices
    assert (dist / "serve_config.yaml").read_text() == (ROOT / "serve_config.yaml").read_text()

