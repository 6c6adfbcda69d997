"""Shell completion: Typer's scripts, and the engine names --to/--from complete to."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shipit.cli.complete import docker_contexts, engines, implicit_ship, ssh_hosts


def _context(docker_config: Path, name: str) -> None:
    meta = docker_config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    endpoint = {"docker": {"Host": "unix:///x.sock", "SkipTLSVerify": False}}
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": endpoint}))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A HOME with an ssh config (and an Include) and a docker config with two contexts."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SHIPIT_SSH_CONFIG", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    ssh = tmp_path / ".ssh"
    (ssh / "conf.d").mkdir(parents=True)
    (ssh / "config").write_text(
        "# hosts\n"
        "Host web1 web2\n"
        "    HostName 10.0.0.1\n"
        "Host *.corp !bastion db-?\n"
        "Host=builder  # trailing comment\n"
        "Include conf.d/*.conf\n"
        "Match host x\n"
        "  User y\n"
    )
    (ssh / "conf.d" / "extra.conf").write_text("host staging web1\n")
    _context(tmp_path / ".docker", "prod")
    _context(tmp_path / ".docker", "laptop")
    return tmp_path


def test_ssh_hosts_skip_patterns_and_follow_includes(home):
    assert ssh_hosts() == ["web1", "web2", "builder", "staging"]


def test_shipit_ssh_config_is_respected(home, tmp_path, monkeypatch):
    other = tmp_path / "other_config"
    other.write_text("Host only-here\n")
    monkeypatch.setenv("SHIPIT_SSH_CONFIG", str(other))
    assert ssh_hosts() == ["only-here"]
    assert ssh_hosts(home / ".ssh" / "config")[:2] == ["web1", "web2"]  # --ssh-config wins
    assert ssh_hosts(tmp_path / "missing") == []


def test_docker_contexts(home, monkeypatch):
    assert docker_contexts() == ["default", "laptop", "prod"]
    monkeypatch.setenv("DOCKER_CONFIG", str(home / "nowhere"))
    assert docker_contexts() == ["default"]


def test_engines_complete_contexts_then_hosts(home):
    assert engines("") == [
        ("default", "docker context"),
        ("laptop", "docker context"),
        ("prod", "docker context"),
        ("web1", "ssh host"),
        ("web2", "ssh host"),
        ("builder", "ssh host"),
        ("staging", "ssh host"),
    ]
    assert engines("we") == [("web1", "ssh host"), ("web2", "ssh host")]


def _complete(home: Path, **env: str) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k != "SHIPIT_SSH_CONFIG"}
    full.update(HOME=str(home), **env)
    full.pop("DOCKER_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "shipit"], capture_output=True, text=True, env=full, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("command", ["ship rosie:latest", "rosie:latest"])  # the word is optional
def test_bash_completes_to_from_engines(home, command):
    words = f"shipit {command} --to w".split()
    out = _complete(
        home,
        _SHIPIT_COMPLETE="complete_bash",
        COMP_WORDS=" ".join(words),
        COMP_CWORD=str(len(words) - 1),
    )
    assert out == ["web1", "web2"]


def test_zsh_and_fish_complete_from(home):
    zsh = _complete(
        home, _SHIPIT_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="shipit app --from pr"
    )
    assert "prod" in "\n".join(zsh) and "docker context" in "\n".join(zsh)
    fish = _complete(
        home,
        _SHIPIT_COMPLETE="complete_fish",
        _TYPER_COMPLETE_FISH_ACTION="get-args",
        _TYPER_COMPLETE_ARGS="shipit load f.tar --to ",
    )
    assert "web1\tssh host" in fish and "laptop\tdocker context" in fish


def test_commands_still_complete_first(home):
    out = _complete(home, _SHIPIT_COMPLETE="complete_bash", COMP_WORDS="shipit ", COMP_CWORD="1")
    assert {"ship", "save", "load", "info"} <= set(out)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_prints_each_shells_script(home, shell):
    # Typer detects the user's shell; the test names it instead.
    full = dict(os.environ, HOME=str(home), _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    done = subprocess.run(
        [sys.executable, "-m", "shipit", "--show-completion", shell],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "_SHIPIT_COMPLETE=complete_" + shell in done.stdout


def test_install_completion_writes_into_home(home):
    full = dict(os.environ, HOME=str(home), _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    done = subprocess.run(
        [sys.executable, "-m", "shipit", "--install-completion", "bash"],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "_SHIPIT_COMPLETE=complete_bash" in (home / ".bash_completions" / "shipit.sh").read_text()
    )
    assert "shipit.sh" in (home / ".bashrc").read_text()


def test_implicit_ship_leaves_commands_alone():
    env = {"COMP_WORDS": "shipit info ri", "COMP_CWORD": "2"}
    implicit_ship(env, {"info", "ship"}, {"--help"})
    assert env == {"COMP_WORDS": "shipit info ri", "COMP_CWORD": "2"}
    env = {"_TYPER_COMPLETE_ARGS": "shipit ro"}  # still typing the first word
    implicit_ship(env, {"info", "ship"}, {"--help"})
    assert env == {"_TYPER_COMPLETE_ARGS": "shipit ro"}
    env = {"_TYPER_COMPLETE_ARGS": "shipit rosie --to "}
    implicit_ship(env, {"info", "ship"}, {"--help"})
    assert env == {"_TYPER_COMPLETE_ARGS": "shipit ship rosie --to "}
