"""SSH safety against the rig's sshd: host keys (unknown, accepted, changed) and auth failures."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from engines import said

from shipit import ssh
from shipit.daemon import probe, resolve_endpoint
from shipit.errors import AuthenticationFailed, ConnectionFailed, HostKeyError

pytestmark = pytest.mark.integration


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "t", "-f", str(path)],
        check=True,
    )
    return path


def rig_name(rig) -> str:
    return f"[{rig['ssh']['host']}]:{rig['ssh']['port']}"


def assert_one_line_error(done: subprocess.CompletedProcess, code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = said(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("shipit: error: "), done.stderr
    return done.stderr


def test_unknown_host_key_is_refused_with_its_fingerprint(
    rig, ssh_config_untrusted, empty_known_hosts, run_shipit
):
    done = run_shipit("info", "--ssh-config", ssh_config_untrusted, "rig-d26")
    message = assert_one_line_error(done, HostKeyError.exit_code)
    assert rig_name(rig) in message
    assert any(
        f"{kind} {fp}" in message for kind, fp in rig["ssh"]["host_key_fingerprints"].items()
    ), message
    assert "--accept-new-host-key" in message
    assert not empty_known_hosts.exists()


def test_accept_new_host_key_records_it_once(
    rig, ssh_config_untrusted, empty_known_hosts, run_shipit
):
    first = run_shipit(
        "info", "--json", "--accept-new-host-key", "--ssh-config", ssh_config_untrusted, "rig-d20"
    )
    assert first.returncode == 0, first.stderr
    lines = empty_known_hosts.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{rig_name(rig)} ")
    assert oct(empty_known_hosts.stat().st_mode & 0o777) == "0o600"
    # OpenSSH agrees the recorded key is the host's key.
    found = subprocess.run(
        ["ssh-keygen", "-F", rig_name(rig), "-f", str(empty_known_hosts)], capture_output=True
    )
    assert found.returncode == 0
    again = run_shipit("info", "--json", "--ssh-config", ssh_config_untrusted, "rig-d26c")
    assert again.returncode == 0, again.stderr
    assert empty_known_hosts.read_text().splitlines() == lines  # nothing new recorded


def test_changed_host_key_is_refused_even_with_accept_new(
    rig, tmp_path, make_ssh_config, run_shipit
):
    impostor = keygen(tmp_path / "impostor")
    kind, blob = Path(f"{impostor}.pub").read_text().split()[:2]
    known = tmp_path / "changed_known_hosts"
    known.write_text(f"{rig_name(rig)} {kind} {blob}\n")
    config = make_ssh_config(known)
    done = run_shipit("info", "--accept-new-host-key", "--ssh-config", config, "rig-d20")
    message = assert_one_line_error(done, HostKeyError.exit_code)
    assert "CHANGED" in message and rig_name(rig) in message
    assert rig["ssh"]["host_key_fingerprints"]["ssh-ed25519"] in message
    assert known.read_text() == f"{rig_name(rig)} {kind} {blob}\n"  # untouched


def test_wrong_identity_is_an_authentication_failure(
    rig, tmp_path, ssh_config, make_ssh_config, run_shipit
):
    wrong = keygen(tmp_path / "wrong_key")
    config = make_ssh_config(ssh_config.parent / "known_hosts", "wrong", IdentityFile=str(wrong))
    done = run_shipit("info", "--ssh-config", config, "rig-d26")
    message = assert_one_line_error(done, AuthenticationFailed.exit_code)
    assert "authentication failed for rig-d26@" in message
    assert str(wrong) in message


def test_encrypted_identity_says_to_use_the_agent(
    rig, tmp_path, ssh_config, make_ssh_config, run_shipit
):
    locked = keygen(tmp_path / "locked_key", passphrase="secret")
    config = make_ssh_config(ssh_config.parent / "known_hosts", "locked", IdentityFile=str(locked))
    done = run_shipit("info", "--ssh-config", config, "rig-d26")
    message = assert_one_line_error(done, AuthenticationFailed.exit_code)
    assert f"key {locked} is encrypted" in message and "ssh-agent" in message


@pytest.mark.skipif(not shutil.which("ssh-agent"), reason="no ssh-agent")
def test_encrypted_identity_held_by_an_agent_works(rig, tmp_path, ssh_config, make_ssh_config):
    locked = tmp_path / "rig_key_locked"
    shutil.copy(rig["ssh"]["identity"], locked)
    locked.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "secret", "-f", str(locked)], check=True)
    shutil.copy(rig["ssh"]["identity"] + ".pub", f"{locked}.pub")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.1)
        env = {"SSH_AUTH_SOCK": str(sock), "PATH": "/usr/bin:/bin"}
        subprocess.run(["ssh-add", "-q", rig["ssh"]["identity"]], check=True, env=env)
        config = make_ssh_config(
            ssh_config.parent / "known_hosts",
            "agent",
            IdentityFile=f"{locked}\n  IdentityAgent {sock}",
        )
        with resolve_endpoint("rig-d26", ssh_config=config) as endpoint:
            assert probe(endpoint).image_store == "classic"
    finally:
        agent.terminate()
        agent.wait()


def test_connection_refused(rig, ssh_config, make_ssh_config, run_shipit):
    config = make_ssh_config(ssh_config.parent / "known_hosts", "refused", Port="1")
    done = run_shipit("info", "--ssh-config", config, "rig-d20")
    message = assert_one_line_error(done, ConnectionFailed.exit_code)
    assert "refused" in message


def test_unknown_host_name(run_shipit, tmp_path):
    config = tmp_path / "empty_config"
    config.write_text("")
    done = run_shipit("info", "--ssh-config", config, "no-such-host.invalid")
    message = assert_one_line_error(done, ConnectionFailed.exit_code)
    assert "no-such-host.invalid" in message and "resolve" in message


def test_proxyjump_through_another_rig_user(rig, ssh_config):
    text = ssh_config.read_text()
    # rig-d26c's entry, reached through rig-d20 (same sshd, but a real direct-tcpip hop).
    text = text.replace("Host rig-d26c\n", "Host rig-d26c\n  ProxyJump rig-d20\n", 1)
    ssh_config.write_text(text)
    host = ssh.resolve_host("rig-d26c", config=ssh.load_config(ssh_config))
    assert host.via is not None and host.via.user == "rig-d20"
    with resolve_endpoint("rig-d26c", ssh_config=ssh_config) as endpoint:
        assert probe(endpoint).image_store == "containerd"
        assert endpoint.session is not None and endpoint.session.jump is not None


@pytest.mark.skipif(not shutil.which("ssh"), reason="no OpenSSH client")
def test_proxycommand(rig, ssh_config):
    text = ssh_config.read_text().replace(
        "Host rig-d26\n",
        f"Host rig-d26\n  ProxyCommand ssh -F {ssh_config} -W %h:%p rig-d20\n",
        1,
    )
    ssh_config.write_text(text)
    with resolve_endpoint("rig-d26", ssh_config=ssh_config) as endpoint:
        assert probe(endpoint).loads_zstd is True


def test_a_failing_remote_command_explains_itself(rig, ssh_config):
    host = ssh.resolve_host("rig-d20", config=ssh.load_config(ssh_config))
    with ssh.connect(host) as session:
        dial = session.open_dial_stdio(command="docker-nope system dial-stdio")
        assert dial.makefile("rb").read() == b""
        assert "not found" in session.remote_errors()
        assert "127" in session.remote_errors()
