"""containerd targets without a node: what an address names, what the probe's output
says, what a containerd version takes, and which layers the content store spares."""

from __future__ import annotations

import subprocess

import pytest

from shipit.addresses import is_ssh_destination
from shipit.archive.reader import BlobRecord
from shipit.containerd.address import parse_node_address
from shipit.containerd.target import (
    ContentHoldings,
    NodeFacts,
    access_error,
    capabilities_for,
    import_error,
    parse_probe,
    probe_script,
    version_tuple,
)
from shipit.errors import ConnectionFailed, EngineError, PermissionDenied, UsageError
from shipit.platforms import Platform
from shipit.remote import Completed


@pytest.mark.parametrize(
    ("address", "host", "user", "port", "namespace", "socket", "snapshotter"),
    [
        ("ctr://node1", "node1", None, None, "k8s.io", None, "overlayfs"),
        ("containerd://ops@node1:2222", "node1", "ops", 2222, "k8s.io", None, "overlayfs"),
        (
            "ctr://node1?namespace=default&address=/run/k3s/containerd/containerd.sock",
            "node1",
            None,
            None,
            "default",
            "/run/k3s/containerd/containerd.sock",
            "overlayfs",
        ),
        ("ctr://n/?snapshotter=native", "n", None, None, "k8s.io", None, "native"),
        ("ctr://[::1]:22?namespace=moby", "::1", None, 22, "moby", None, "overlayfs"),
    ],
)
def test_node_addresses(address, host, user, port, namespace, socket, snapshotter):
    node = parse_node_address(address)
    assert (node.host, node.user, node.port) == (host, user, port)
    assert (node.namespace, node.socket, node.snapshotter) == (namespace, socket, snapshotter)
    assert node.name == address


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("ctr://", "expected ctr://"),
        ("ctr://node/path", "expected ctr://"),
        ("ctr://node?ns=x", "unknown option 'ns'"),
        ("ctr://node?namespace=Bad Name", "not a containerd namespace"),
        ("ctr://node?namespace=", "not a containerd namespace"),
        ("ctr://node?address=relative.sock", "absolute socket path"),
        ("ctr://node:port", "not a number"),
        ("ctr://node?snapshotter=../x", "not a snapshotter"),
    ],
)
def test_bad_node_addresses_are_usage_errors(address, says):
    with pytest.raises(UsageError, match=".*" + says.replace("(", r"\(")):
        parse_node_address(address)


def test_only_ssh_destinations_are_asked_which_engine_they_run(monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", "/nonexistent")
    assert is_ssh_destination("node1")
    assert is_ssh_destination("ops@node1")
    assert is_ssh_destination("ssh://node1")
    assert not is_ssh_destination("unix:///run/docker.sock")
    assert not is_ssh_destination("tcp://10.0.0.1:2375")
    assert not is_ssh_destination("default")


SUDO_NODE = """has ctr /usr/bin/ctr
has nerdctl /usr/local/bin/nerdctl
arch aarch64
user ops
address /run/containerd/containerd.sock
== version
Client:
  Version:  1.7.24~ds1
  Revision:
  Go version: go1.23.1

ctr: failed to dial "/run/containerd/containerd.sock": connect: permission denied
== sudo
Client:
  Version:  1.7.24~ds1
  Revision:
  Go version: go1.23.1

Server:
  Version:  1.7.24~ds1
  Revision:
  UUID: 0b4bd2a4-0d7e-4b47-a9a4-a2b3c5e1f0aa
== via sudo
cmd /usr/bin/ctr
cmd --address
cmd /run/containerd/containerd.sock
== namespaces
k8s.io
moby
== plugins
TYPE                                   ID                       PLATFORMS      STATUS
io.containerd.snapshotter.v1           btrfs                    linux/arm64/v8 skip
io.containerd.snapshotter.v1           overlayfs                linux/arm64/v8 ok
io.containerd.snapshotter.v1           native                   linux/arm64/v8 ok
io.containerd.grpc.v1                  cri                      -              ok
== end
"""


def test_a_probe_through_sudo():
    facts = parse_probe(SUDO_NODE)
    assert facts.has == {"ctr": "/usr/bin/ctr", "nerdctl": "/usr/local/bin/nerdctl"}
    assert not facts.docker
    assert facts.via == "sudo"
    assert facts.command == ("/usr/bin/ctr", "--address", "/run/containerd/containerd.sock")
    assert (facts.client_version, facts.server_version) == ("1.7.24~ds1", "1.7.24~ds1")
    assert facts.namespaces == ("k8s.io", "moby")
    assert facts.snapshotters == {"btrfs": "skip", "overlayfs": "ok", "native": "ok"}
    assert str(facts.platform) == "linux/arm64"
    assert facts.platform.matches(Platform.parse("linux/arm64/v8"))
    assert facts.user == "ops"


def test_a_probe_without_access_keeps_the_reason():
    text = SUDO_NODE.split("== sudo")[0] + "== sudo\nsudo: a password is required\n== via none\n"
    facts = parse_probe(text)
    assert facts.via == "none"
    assert "permission denied" in facts.access_error
    assert facts.namespaces == ()


def test_a_docker_host_stops_the_probe_early():
    facts = parse_probe("has docker /usr/bin/docker\nhas ctr /usr/bin/ctr\narch x86_64\n")
    assert facts.docker and facts.via == ""


def test_the_probe_script_runs_in_a_posix_shell(tmp_path):
    """The real script under dash, on a PATH with a fake ctr that works directly."""
    fake = tmp_path / "ctr"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case $a in\n'
        '  version) printf "Client:\\n  Version: 2.1.9\\nServer:\\n  Version: 2.1.9\\n"; exit 0;;\n'
        "  plugins) break;;\n"
        "  namespaces) echo k8s.io; exit 0;;\n"
        "esac; done\n"
        'echo "TYPE ID PLATFORMS STATUS"\n'
        'echo "io.containerd.snapshotter.v1 overlayfs linux/amd64 ok"\n'
    )
    fake.chmod(0o755)
    script = probe_script("containerd", "/tmp/x.sock")
    done = subprocess.run(
        script,
        shell=True,
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    facts = parse_probe(done.stdout)
    assert facts.via == "direct"
    assert facts.command == (str(fake), "--address", "/tmp/x.sock")
    assert facts.server_version == "2.1.9"
    assert facts.namespaces == ("k8s.io",)
    assert facts.snapshotters == {"overlayfs": "ok"}


@pytest.mark.parametrize(
    ("version", "zstd"),
    [("1.4.13", False), ("1.5.0", True), ("1.7.24~ds1", True), ("2.1.9+unknown", True)],
)
def test_zstd_layers_from_containerd_1_5(version, zstd):
    facts = NodeFacts(has={"ctr": "/usr/bin/ctr"}, arch="x86_64", server_version=version)
    caps = capabilities_for(facts, "node", "overlayfs")
    assert caps.readable("zstd") is zstd
    assert caps.readable("gzip") and caps.readable("none")
    assert caps.keeps_blobs and caps.indexes and not caps.manifest_json
    assert caps.holdings == "content" and caps.identity == "manifest"
    assert caps.platform == Platform.parse("linux/amd64")
    assert caps.upload_compressions == frozenset()


def test_version_tuple():
    assert version_tuple("v2.1.9") == (2, 1)
    assert version_tuple("1.7.24~ds1") == (1, 7)
    assert version_tuple("") == (0, 0)


def _record(digest: str, diff_id: str | None) -> BlobRecord:
    return BlobRecord(
        key=digest,
        source_digest=digest,
        source_size=1,
        source_compression="none",
        digest=digest,
        size=1,
        compression="zstd",
        diff_id=diff_id,
    )


def test_the_content_store_spares_the_layers_it_holds():
    held = "sha256:" + "a" * 64
    new = "sha256:" + "b" * 64
    holdings = ContentHoldings(None, frozenset({held}))
    assert not holdings.wants(_record(held, "sha256:" + "1" * 64))
    assert holdings.wants(_record(new, "sha256:" + "2" * 64))
    assert holdings.wants(_record(held, None))  # not a layer: always sent
    assert not holdings.pre_skip(held)  # the sent form may differ from the source's


@pytest.mark.parametrize(
    ("stderr", "kind", "says"),
    [
        (
            b"ctr: write /var/lib/containerd/x: no space left on device\n",
            EngineError,
            "disk is full",
        ),
        (b"ctr: unable to initialize unpacker: no unpack platforms\n", EngineError, "rejected"),
        (b"ctr: open /run/containerd/containerd.sock: permission denied\n", ConnectionFailed, ""),
    ],
)
def test_import_failures_are_one_line(stderr, kind, says):
    error = import_error("node1", Completed("ctr images import -", 1, b"", stderr))
    assert isinstance(error, kind)
    assert "\n" not in str(error) and str(error).startswith("importing into node1: ")
    assert says in str(error)


def test_no_access_says_what_to_do():
    facts = NodeFacts(
        has={"ctr": "/usr/bin/ctr"},
        user="ops",
        socket="/run/containerd/containerd.sock",
        command=("/usr/bin/ctr",),
        via="none",
        access_error='failed to dial "/run/containerd/containerd.sock": permission denied',
    )
    error = access_error("node1", facts)
    assert isinstance(error, PermissionDenied) and error.exit_code == 4
    assert "ops cannot open the containerd socket /run/containerd/containerd.sock" in str(error)
    assert "sudo -n /usr/bin/ctr" in str(error)
