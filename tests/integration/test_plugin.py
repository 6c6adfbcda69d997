"""`docker shipit ...` through the real docker CLIs on this machine (Debian 12's 20.10 and
a current one), after `shipit install-plugin` into a DOCKER_CONFIG of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engines import docker_cli, identity, inspect, remove, run_image, said, socket

pytestmark = pytest.mark.integration

CLIS = [cli for cli in ("/usr/bin/docker", "/usr/local/bin/docker") if os.access(cli, os.X_OK)]


def _version(cli: str) -> str:
    return subprocess.run([cli, "--version"], capture_output=True, text=True, timeout=30).stdout


#: The CLIs that ask a plugin for completions (Docker 20.10 never does).
COMPLETING = [cli for cli in CLIS if "20.10" not in _version(cli)]


@pytest.fixture(params=CLIS or [None], ids=lambda cli: f"cli{cli}" if cli else "no-cli")
def cli(request) -> str:
    if request.param is None:
        pytest.fail("no docker CLI on this machine (the rig installs /usr/bin/docker)")
    assert _version(request.param).startswith("Docker version")
    return request.param


@pytest.fixture
def docker_config(tmp_path: Path) -> Path:
    return tmp_path / "docker-config"


def _env(docker_config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    env["DOCKER_CONFIG"] = str(docker_config)
    env.update(extra)
    return env


def _shipit(docker_config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shipit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(docker_config),
    )


def _docker(cli: str, docker_config: Path, *args: object, **env: str):
    return subprocess.run(
        [cli, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(docker_config, **env),
    )


@pytest.fixture
def installed(docker_config: Path) -> Path:
    done = _shipit(docker_config, "install-plugin")
    assert done.returncode == 0, done.stderr
    link = docker_config / "cli-plugins" / "docker-shipit"
    assert link.is_symlink()
    assert link.resolve() == (Path(sys.executable).parent / "docker-shipit").resolve()
    assert done.stdout.startswith(f"installed {link} -> ")
    return link


def _one_line(stderr: str) -> str:
    lines = said(stderr)
    assert len(lines) == 1, stderr
    return lines[0]


def test_the_docker_cli_lists_the_plugin_and_its_help(cli, docker_config, installed):
    listed = _docker(cli, docker_config, "--help")
    assert listed.returncode == 0, listed.stderr
    line = next(li for li in listed.stdout.splitlines() if li.strip().startswith("shipit"))
    assert "Move images between Docker engines without a registry" in line
    helped = _docker(cli, docker_config, "shipit", "ship", "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("Usage: docker shipit ship [OPTIONS]")
    meta = subprocess.run(
        [installed, "docker-cli-plugin-metadata"], capture_output=True, text=True, timeout=30
    )
    assert json.loads(meta.stdout) == {
        "SchemaVersion": "0.1.0",
        "Vendor": "shipit",
        "Version": json.loads(meta.stdout)["Version"],
        "ShortDescription": "Move images between Docker engines without a registry",
    }


def test_docker_shipit_inherits_docker_host_and_ships_over_ssh(
    rig, cli, docker_config, installed, ssh_config
):
    before = inspect(rig, "d20", "rosie:latest")
    assert before is not None
    remove(rig, "d26c", "rosie:latest")
    done = _docker(
        cli,
        docker_config,
        "shipit",
        "rosie:latest",
        "--to",
        rig["engines"]["d26c"]["ssh_alias"],
        "--ssh-config",
        ssh_config,
        "--json",
        DOCKER_HOST=socket(rig, "d20"),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["images"] == ["rosie:latest"]
    assert report["target"]["store"] == "containerd"
    # (other rig images share rosie's layer: it may be on the target already)
    assert report["layers_sent"] + report["layers_skipped"] == report["layers"] >= 1
    landed = inspect(rig, "d26c", "rosie:latest")
    assert landed is not None and identity(landed) == identity(before)
    assert "Hello, World!" in run_image(rig, "d26c", "rosie:latest")


@pytest.mark.parametrize("how", ["--context", "-c", "--context=", "DOCKER_CONTEXT"])
def test_docker_context_is_the_source(rig, cli, docker_config, installed, how):
    # An image only the context's engine has: the ship succeeds only if it is the source.
    only = "plugin-context-only:v1"
    for engine in ("d20", "d26c"):
        remove(rig, engine, only)
    docker_cli(rig, "d26", "tag", "rosie:latest", only)
    created = _docker(
        cli, docker_config, "context", "create", "src26", "--docker", f"host={socket(rig, 'd26')}"
    )
    assert created.returncode == 0, created.stderr
    if how == "DOCKER_CONTEXT":
        flags: list[str] = []
        env = {"DOCKER_CONTEXT": "src26"}
    else:
        flags = [how + "src26"] if how.endswith("=") else [how, "src26"]
        # $DOCKER_HOST names another engine: the docker CLI's --context wins over it.
        env = {"DOCKER_HOST": socket(rig, "d20")}
    try:
        done = _docker(
            cli,
            docker_config,
            *flags,
            "shipit",
            only,
            "--to",
            socket(rig, "d20"),
            "--json",
            **env,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["images"] == [only]
        landed = inspect(rig, "d20", only)
        assert landed is not None
        assert landed["Id"] == inspect(rig, "d26", only)["Id"]
        # And an image the context's engine lacks is refused with its name, in one line.
        missing = _docker(cli, docker_config, *flags, "shipit", "nosuch:v9", "--to", "d20", **env)
        assert missing.returncode == 5, missing.stderr
        assert _one_line(missing.stderr) == "shipit: error: src26: no such image: nosuch:v9"
    finally:
        for engine in ("d20", "d26"):
            remove(rig, engine, only)


def test_docker_dash_h_is_the_engine_of_every_command(rig, cli, docker_config, installed):
    done = _docker(cli, docker_config, "-H", socket(rig, "d26c"), "shipit", "info", "--json")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["image_store"] == "containerd"


def test_docker_tls_options_are_refused_in_one_line(rig, cli, docker_config, installed):
    done = _docker(cli, docker_config, "-H", socket(rig, "d26"), "--tls", "shipit", "info")
    if "20.10" in _docker(cli, docker_config, "--version").stdout:
        # Docker 20.10 resolves the endpoint (and its TLS files) before it runs a plugin.
        assert done.returncode == 1 and "ca.pem" in _one_line(done.stderr)
        return
    assert done.returncode == 6, done.stderr
    assert _one_line(done.stderr) == (
        "shipit: error: docker --tls: shipit does not speak TLS to engines yet"
    )


def test_uninstall_removes_the_link(cli, docker_config, installed):
    done = _shipit(docker_config, "install-plugin", "--uninstall")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"removed {installed}"
    assert not installed.is_symlink()
    gone = _docker(cli, docker_config, "shipit", "info")
    assert gone.returncode == 1
    # 20.10: "docker: 'shipit' is not a docker command."; 28: "docker: unknown command: ..."
    assert "'shipit' is not a docker command" in gone.stderr or (
        "unknown command: docker shipit" in gone.stderr
    )
    again = _shipit(docker_config, "install-plugin", "--uninstall")
    assert again.returncode == 0 and again.stdout.startswith("not installed")


def test_install_refuses_to_replace_a_file(docker_config):
    link = docker_config / "cli-plugins" / "docker-shipit"
    link.parent.mkdir(parents=True)
    link.write_text("#!/bin/sh\n")
    done = _shipit(docker_config, "install-plugin")
    assert done.returncode == 2
    assert _one_line(done.stderr) == (
        f"shipit: error: {link} exists and is not a link; remove it first"
    )
    assert link.read_text() == "#!/bin/sh\n"


@pytest.mark.parametrize("completing", COMPLETING or [None])
def test_docker_completion_asks_the_plugin(completing, docker_config, installed, tmp_path):
    assert completing is not None, "no docker CLI here asks plugins for completions"
    cli = completing
    config = tmp_path / "ssh_config"
    config.write_text("Host web1 web2\n    HostName 10.0.0.1\nHost *.example\n")
    done = _docker(
        cli,
        docker_config,
        "__complete",
        "shipit",
        "app",
        "--to",
        "w",
        SHIPIT_SSH_CONFIG=str(config),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == ["web1\tssh host", "web2\tssh host", ":4"]
