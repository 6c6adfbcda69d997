"""Which engine a TARGET names: URLs, docker contexts, SSH destinations (no connection made)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shipit.daemon.address import Address, parse_address
from shipit.errors import Unsupported, UsageError


def add_context(config_dir: Path, name: str, host: str, tls: bool = False) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config_dir / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    endpoint = {"Host": host, "SkipTLSVerify": False}
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}})
    )
    if tls:
        (config_dir / "contexts" / "tls" / digest / "docker").mkdir(parents=True)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path)}


def test_nothing_set_means_the_local_socket(env):
    assert parse_address(None, env) == Address(
        name="unix:///var/run/docker.sock", url="unix:///var/run/docker.sock"
    )


def test_docker_host_env(env):
    env["DOCKER_HOST"] = "tcp://10.0.0.5:2375"
    assert parse_address(None, env).url == "tcp://10.0.0.5:2375"


def test_docker_host_env_may_be_ssh(env):
    env["DOCKER_HOST"] = "ssh://deploy@build-box:2200"
    target = parse_address(None, env)
    assert (target.ssh_host, target.ssh_user, target.ssh_port) == ("build-box", "deploy", 2200)


def test_current_context_from_config_json(env, tmp_path):
    add_context(tmp_path, "prod", "ssh://ops@prod-1")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "prod"}))
    target = parse_address(None, env)
    assert target.name == "prod"
    assert (target.ssh_host, target.ssh_user, target.ssh_port) == ("prod-1", "ops", None)


def test_docker_context_env_beats_docker_host_which_beats_config(env, tmp_path):
    add_context(tmp_path, "lab", "unix:///run/lab.sock")
    add_context(tmp_path, "prod", "unix:///run/prod.sock")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "prod"}))
    env["DOCKER_HOST"] = "unix:///run/env.sock"
    assert parse_address(None, env).url == "unix:///run/env.sock"
    env["DOCKER_CONTEXT"] = "lab"
    assert parse_address(None, env).url == "unix:///run/lab.sock"


def test_missing_current_context_is_an_error_not_an_ssh_host(env, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "gone"}))
    with pytest.raises(UsageError, match="'gone'"):
        parse_address(None, env)


def test_default_context_name(env):
    env["DOCKER_HOST"] = "unix:///run/x.sock"
    assert parse_address("default", env).url == "unix:///run/x.sock"


@pytest.mark.parametrize(
    "url", ["unix:///var/tmp/rig/d20/docker.sock", "tcp://127.0.0.1:2375", "http://h:2375"]
)
def test_docker_urls_pass_through(env, url):
    assert parse_address(url, env) == Address(name=url, url=url)


@pytest.mark.parametrize(
    ("url", "user", "host", "port"),
    [
        ("ssh://rig-d20@127.0.0.1:2222", "rig-d20", "127.0.0.1", 2222),
        ("ssh://deploy-server", None, "deploy-server", None),
        ("ssh://root@[::1]:22", "root", "::1", 22),
        ("ssh://build/", None, "build", None),
    ],
)
def test_ssh_urls(env, url, user, host, port):
    target = parse_address(url, env)
    assert target.is_ssh and target.url is None and target.name == url
    assert (target.ssh_user, target.ssh_host, target.ssh_port) == (user, host, port)


def test_a_context_wins_over_an_ssh_alias_of_the_same_name(env, tmp_path):
    add_context(tmp_path, "deploy-server", "unix:///run/deploy.sock")
    assert parse_address("deploy-server", env).url == "unix:///run/deploy.sock"


def test_other_bare_names_are_ssh_destinations(env):
    assert parse_address("rig-d26", env) == Address(name="rig-d26", ssh_host="rig-d26")
    assert parse_address("ops@rig-d26", env) == Address(
        name="ops@rig-d26", ssh_host="rig-d26", ssh_user="ops"
    )


def test_bare_host_port_asks_for_an_ssh_url(env):
    with pytest.raises(UsageError, match="ssh://"):
        parse_address("box:2222", env)


@pytest.mark.parametrize("url", ["https://h:2376", "npipe:////./pipe/docker_engine"])
def test_unsupported_schemes(env, url):
    with pytest.raises(Unsupported):
        parse_address(url, env)


def test_tls_contexts_are_refused_rather_than_used_in_plain_text(env, tmp_path):
    add_context(tmp_path, "secure", "tcp://h:2376", tls=True)
    with pytest.raises(Unsupported, match="TLS"):
        parse_address("secure", env)


def test_ssh_url_port_must_be_a_number(env):
    with pytest.raises(UsageError, match="port"):
        parse_address("ssh://h:twenty", env)


def test_a_local_engine_loads_no_ssh_code(tmp_path):
    """A ship from a local socket asks for its save before paramiko (about 0.15 s of
    imports) is loaded: only an SSH destination loads it."""
    script = f"""
import sys
from shipit.addresses import open_source
from shipit.errors import ConnectionFailed
from shipit.options import Connect
try:
    open_source("unix://{tmp_path}/no.sock", Connect())
except ConnectionFailed as exc:
    print("refused:", exc)
print(sorted(m for m in ("paramiko", "shipit.ssh", "shipit.remote") if m in sys.modules))
import paramiko, shipit.ssh  # and both still load when asked for
print(paramiko.SSHClient.__name__)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    refused, loaded, client = done.stdout.splitlines()
    assert refused.startswith("refused:") and "no.sock" in refused
    assert loaded == "[]"
    assert client == "SSHClient"
