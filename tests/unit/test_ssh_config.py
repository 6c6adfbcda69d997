"""SSH config resolution, known_hosts recording and key handling, without a server."""

from __future__ import annotations

import base64
import getpass
import os
import shutil
import stat
import subprocess
from pathlib import Path

import paramiko
import pytest

from shipit import ssh
from shipit.addresses import parse_user_host_port
from shipit.errors import HostKeyError, UsageError

HOME = os.path.expanduser("~")
needs_ssh_keygen = pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="no ssh-keygen")


def config(text: str) -> paramiko.SSHConfig:
    return paramiko.SSHConfig.from_text(text)


RIG_LIKE = """
Host rig-d20
    HostName 127.0.0.1
    Port 2222
    User rig-d20
    IdentityFile ~/keys/%u-%h.key
    IdentityFile %d/other
    IdentitiesOnly yes
    UserKnownHostsFile ~/kh/one "/tmp/kh two"
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking accept-new
    ConnectTimeout 7
    IdentityAgent none

Host far
    HostName 10.1.2.3
    User app
    ProxyJump ops@bastion:2200,inner

Host bastion
    HostName bastion.example.org
    ProxyJump gate

Host inner
    HostName 192.168.0.9
    ProxyJump never-used

Host piped
    ProxyCommand nc -X connect %h %p
"""


def test_rig_style_host_resolves_every_option():
    host = ssh.resolve_host("rig-d20", config=config(RIG_LIKE))
    assert (host.hostname, host.port, host.user) == ("127.0.0.1", 2222, "rig-d20")
    assert host.identity_files == (
        f"{HOME}/keys/{getpass.getuser()}-127.0.0.1.key",
        f"{HOME}/other",
    )
    assert host.identities_only is True
    assert host.known_hosts_files == (f"{HOME}/kh/one", "/tmp/kh two")
    assert host.global_known_hosts_files == ("/dev/null",)
    assert host.strict_host_key_checking == "accept-new"
    assert host.connect_timeout == 7.0
    assert host.identity_agent is None
    assert host.known_hosts_name == "[127.0.0.1]:2222"
    assert str(host) == "rig-d20@127.0.0.1:2222"


def test_explicit_user_and_port_beat_the_config():
    host = ssh.resolve_host("rig-d20", user="admin", port=22, config=config(RIG_LIKE))
    assert (host.user, host.port, host.known_hosts_name) == ("admin", 22, "127.0.0.1")


def test_unknown_host_gets_openssh_defaults(monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    host = ssh.resolve_host("box.example.org", config=config(""))
    assert (host.hostname, host.port, host.user) == ("box.example.org", 22, getpass.getuser())
    assert host.known_hosts_files == (f"{HOME}/.ssh/known_hosts", f"{HOME}/.ssh/known_hosts2")
    assert host.global_known_hosts_files == ssh.DEFAULT_GLOBAL_KNOWN_HOSTS
    assert host.identity_files == tuple(os.path.expanduser(p) for p in ssh.DEFAULT_IDENTITIES)
    assert host.identities_only is False
    assert host.strict_host_key_checking == "ask"
    assert host.identity_agent == "/tmp/agent.sock"
    assert host.via is None and host.proxy_command is None


def test_proxyjump_chain_like_ssh_dash_j():
    host = ssh.resolve_host("far", config=config(RIG_LIKE))
    assert (host.hostname, host.user) == ("10.1.2.3", "app")
    last = host.via
    assert last is not None and last.hostname == "192.168.0.9"
    first = last.via  # `inner`'s own ProxyJump is ignored: it is reached through the first hop
    assert first is not None
    assert (first.hostname, first.port, first.user) == ("bastion.example.org", 2200, "ops")
    gate = first.via  # the first hop keeps its own config, ProxyJump included
    assert gate is not None and gate.hostname == "gate" and gate.via is None


def test_proxyjump_loop_is_an_error():
    looping = "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n"
    with pytest.raises(UsageError, match="loops"):
        ssh.resolve_host("a", config=config(looping))


def test_proxycommand_tokens_are_expanded():
    host = ssh.resolve_host("piped", config=config(RIG_LIKE))
    assert host.proxy_command == "nc -X connect piped 22"


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("bastion", (None, "bastion", None)),
        ("ops@bastion:2200", ("ops", "bastion", 2200)),
        ("[fe80::1]:2222", (None, "fe80::1", 2222)),
        ("me@fe80::1", ("me", "fe80::1", None)),
    ],
)
def test_parse_user_host_port(spec, parsed):
    assert parse_user_host_port(spec) == parsed


def test_config_file_choice(tmp_path, monkeypatch):
    file = tmp_path / "cfg"
    file.write_text("Host x\n  Port 2022\n")
    monkeypatch.setenv("SHIPIT_SSH_CONFIG", str(file))
    assert ssh.resolve_host("x").port == 2022
    monkeypatch.setenv("SHIPIT_SSH_CONFIG", str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="no such file"):
        ssh.load_config()
    assert ssh.load_config(file).lookup("x")["port"] == "2022"  # the option beats the env
    monkeypatch.delenv("SHIPIT_SSH_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/config: an empty config, no error
    assert ssh.load_config().lookup("x") == {"hostname": "x"}


# --- keys and fingerprints -------------------------------------------------------------------


def keygen(path: Path, passphrase: str = "") -> paramiko.PKey:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", str(path)],
        check=True,
    )
    kind, data = (path.parent / (path.name + ".pub")).read_text().split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(data))


@needs_ssh_keygen
def test_fingerprint_matches_ssh_keygen(tmp_path):
    key = keygen(tmp_path / "k")
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(tmp_path / "k.pub")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    assert ssh.fingerprint(key) == listed
    assert listed.startswith("SHA256:") and not listed.endswith("=")


@needs_ssh_keygen
def test_recorded_host_key_is_found_by_openssh(tmp_path):
    key = keygen(tmp_path / "hostkey")
    known = tmp_path / "new" / "known_hosts"
    ssh.record_host_key(known, "[127.0.0.1]:2222", key)
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    assert known.read_text() == f"[127.0.0.1]:2222 ssh-ed25519 {key.get_base64()}\n"
    found = subprocess.run(
        ["ssh-keygen", "-F", "[127.0.0.1]:2222", "-f", str(known)], capture_output=True, text=True
    )
    assert found.returncode == 0 and key.get_base64() in found.stdout


@needs_ssh_keygen
def test_recording_appends_after_a_line_without_newline_and_can_hash(tmp_path):
    key = keygen(tmp_path / "hostkey")
    known = tmp_path / "known_hosts"
    known.write_text("broken.example ssh-ed25519 AAAAnot-base64")
    ssh.record_host_key(known, "box.example", key, hashed=True)
    lines = known.read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("|1|")
    keys = paramiko.HostKeys()
    ssh.load_known_hosts([str(known), str(tmp_path / "absent")], keys)  # bad lines skipped
    assert keys.lookup("box.example")["ssh-ed25519"] == key
    assert keys.lookup("broken.example") is None


def rig_host(tmp_path: Path, **extra) -> ssh.SSHHost:
    host = ssh.resolve_host(
        "h",
        config=config(
            f"Host h\n HostName 127.0.0.1\n Port 2222\n"
            f" UserKnownHostsFile {tmp_path}/kh1 {tmp_path}/kh2\n"
            + "".join(f" {k} {v}\n" for k, v in extra.items())
        ),
    )
    return host


@needs_ssh_keygen
def test_unknown_host_key_is_refused_with_its_fingerprint(tmp_path):
    key = keygen(tmp_path / "hostkey")
    policy = ssh.HostKeyPolicy(rig_host(tmp_path), accept_new=False)
    with pytest.raises(HostKeyError) as caught:
        policy.missing_host_key(paramiko.SSHClient(), "[127.0.0.1]:2222", key)
    message = str(caught.value)
    assert "[127.0.0.1]:2222" in message and "ssh-ed25519" in message
    assert ssh.fingerprint(key) in message and "--accept-new-host-key" in message
    assert not (tmp_path / "kh1").exists()


@needs_ssh_keygen
@pytest.mark.parametrize(("flag", "strict"), [(True, "ask"), (False, "accept-new")])
def test_accepted_host_key_goes_to_the_first_known_hosts_file(tmp_path, flag, strict):
    key = keygen(tmp_path / "hostkey")
    host = rig_host(tmp_path, StrictHostKeyChecking=strict)
    ssh.HostKeyPolicy(host, accept_new=flag).missing_host_key(
        paramiko.SSHClient(), "[127.0.0.1]:2222", key
    )
    assert paramiko.HostKeys(str(tmp_path / "kh1")).lookup("[127.0.0.1]:2222") is not None
    assert not (tmp_path / "kh2").exists()


@needs_ssh_keygen
def test_encrypted_key_is_skipped_with_advice_not_a_prompt(tmp_path):
    keygen(tmp_path / "locked", passphrase="secret")
    keygen(tmp_path / "open")
    host = ssh.resolve_host(
        "h",
        config=config(
            f"Host h\n IdentityFile {tmp_path}/locked\n IdentityFile {tmp_path}/open\n"
            f" IdentityFile {tmp_path}/absent\n IdentitiesOnly yes\n IdentityAgent none\n"
        ),
    )
    keys, skipped = ssh.KeyAuth(host)._keys(agent=None)
    assert [label for label, _ in keys] == [f"{tmp_path}/open"]
    assert skipped == [
        f"key {tmp_path}/locked is encrypted and no passphrase can be asked; add it to ssh-agent"
    ]
