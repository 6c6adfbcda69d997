"""The Docker CLI plugin protocol: what the docker CLI passes, read the way it means it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shipit.cli import plugin
from shipit.cli.plugin import docker_args, watch_cli_socket
from shipit.errors import Unsupported, UsageError

FROM_DOCKER = {"DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND": "/usr/bin/docker"}


@pytest.mark.parametrize(
    ("argv", "args", "env"),
    [
        (["shipit", "app:v2", "--to", "web1"], ["app:v2", "--to", "web1"], {}),
        (["--context", "prod", "shipit", "a", "--to", "w"], ["a", "--to", "w"], {"C": "prod"}),
        (["--context=prod", "shipit", "info"], ["info"], {"C": "prod"}),
        (["-c", "prod", "shipit", "info"], ["info"], {"C": "prod"}),
        (["-cprod", "shipit", "info"], ["info"], {"C": "prod"}),
        (["-H", "unix:///s.sock", "shipit", "info"], ["info"], {"H": "unix:///s.sock"}),
        (["--host=tcp://h:2375", "shipit", "info"], ["info"], {"H": "tcp://h:2375"}),
        (["-D", "-l", "warn", "--log-level=debug", "shipit", "x"], ["x"], {}),
        (["--config", "/cfg", "shipit", "x"], ["x"], {"CONFIG": "/cfg"}),
        (["--tls=false", "shipit", "x"], ["x"], {}),
        (["shipit", "--context", "x"], ["--context", "x"], {}),  # after the name: shipit's
    ],
)
def test_docker_options_become_the_environment(argv, args, env):
    environ = dict(FROM_DOCKER, DOCKER_HOST="tcp://old:1", DOCKER_CONTEXT="old")
    assert docker_args(argv, environ) == args
    if "C" in env:
        assert environ["DOCKER_CONTEXT"] == env["C"]
    if "H" in env:  # -H wins over an inherited $DOCKER_CONTEXT, as in the docker CLI
        assert environ["DOCKER_HOST"] == env["H"] and "DOCKER_CONTEXT" not in environ
    if not env:
        assert (environ["DOCKER_HOST"], environ["DOCKER_CONTEXT"]) == ("tcp://old:1", "old")
    if "CONFIG" in env:
        assert environ["DOCKER_CONFIG"] == "/cfg"


def test_run_by_hand_it_is_shipit():
    assert docker_args(["app:v2", "--to", "web1"], {}) == ["app:v2", "--to", "web1"]
    assert docker_args(["shipit", "info"], {}) == ["info"]


@pytest.mark.parametrize(
    ("argv", "error", "message"),
    [
        (["--tlsverify", "shipit", "x"], Unsupported, "docker --tlsverify: shipit does not"),
        (["--tlscert", "c.pem", "shipit", "x"], Unsupported, "does not speak TLS"),
        (["--bogus", "shipit"], UsageError, "docker option --bogus is not one shipit knows"),
        (["--context"], UsageError, "docker option --context needs a value"),
        (["-c", "a", "-H", "b", "shipit"], UsageError, "either specify --host or --context"),
        (["-H", "a", "-H", "b", "shipit"], UsageError, "name one host only"),
        (["-D", "other"], UsageError, "expected the plugin name 'shipit'"),
    ],
)
def test_bad_plugin_command_lines(argv, error, message):
    with pytest.raises(error, match=message):
        docker_args(argv, dict(FROM_DOCKER))


def test_metadata_is_what_the_docker_cli_validates():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from shipit.cli.plugin import main; main()",
            "docker-cli-plugin-metadata",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout)
    assert meta["SchemaVersion"] == "0.1.0"
    assert meta["Vendor"] == "shipit"
    assert meta["Version"] and meta["ShortDescription"]


def test_cobra_completion_request_names_engines(tmp_path, capsys, monkeypatch):
    config = tmp_path / "ssh_config"
    config.write_text("Host web1 web2 *.example\n")
    monkeypatch.setenv("SHIPIT_SSH_CONFIG", str(config))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND", "/usr/local/bin/docker")
    monkeypatch.setattr(sys, "argv", ["docker-shipit", "__complete", "shipit", "app", "--to", "we"])
    plugin.main()
    assert capsys.readouterr().out.splitlines() == ["web1\tssh host", "web2\tssh host", ":4"]


def test_the_cli_socket_closing_stops_the_plugin():
    # The docker CLI listens on an abstract socket and closes it to stop the plugin.
    name = f"@shipit-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name[1:])
    server.listen(1)
    stopped = threading.Event()
    assert watch_cli_socket({"DOCKER_CLI_PLUGIN_SOCKET": name}, stopped.set)
    conn, _ = server.accept()
    assert not stopped.wait(0.2)  # connected and waiting
    conn.close()
    server.close()
    assert stopped.wait(5)


def test_no_cli_socket_no_watcher():
    assert not watch_cli_socket({}, lambda: None)
    assert not watch_cli_socket(
        {"DOCKER_CLI_PLUGIN_SOCKET": "@shipit-nobody-listens"}, lambda: None
    )


def test_install_and_uninstall_in_docker_config(tmp_path, monkeypatch):
    entry = tmp_path / "bin" / "docker-shipit"
    entry.parent.mkdir()
    entry.write_text("#!/bin/sh\n")
    entry.chmod(0o755)
    monkeypatch.setattr(plugin, "entry_point", lambda: entry)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    link = tmp_path / "cfg" / "cli-plugins" / "docker-shipit"
    assert plugin.install() == f"installed {link} -> {entry}; run: docker shipit IMAGE --to TARGET"
    assert link.is_symlink() and link.resolve() == entry
    assert plugin.install().startswith("already installed")
    other = tmp_path / "old-docker-shipit"
    link.unlink()
    link.symlink_to(other)  # a link to another (stale) install is replaced
    assert plugin.install().startswith("installed")
    assert link.resolve() == entry
    assert plugin.install(uninstall=True) == f"removed {link}"
    assert not link.exists() and not link.is_symlink()
    assert plugin.install(uninstall=True) == f"not installed: no {link}"
    link.write_text("someone else's\n")
    with pytest.raises(UsageError, match="is not a link shipit made"):
        plugin.install(uninstall=True)


def test_home_docker_is_the_default_plugin_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert plugin.plugin_dir() == Path(tmp_path) / ".docker" / "cli-plugins"
