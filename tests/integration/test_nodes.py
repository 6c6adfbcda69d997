"""containerd without Docker as a target (integration/nodes.sh: containerd 1.7 and 2.1,
each behind its own sshd): images land under their full references in the k8s.io
namespace, unpacked, runnable and exportable; redeploys send only what changed; a fan-out
mixes nodes and Docker engines; sudo, k3s and a user without access behave."""

from __future__ import annotations

import json
import os
import socket as sockets
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import rig_dir
from engines import docker_cli, remove, said, socket
from imagefactory import multi_platform_archive
from test_delta import BASE_MB, _build_app
from test_platforms import IMAGE as MULTI
from test_platforms import _images as multi_images

pytestmark = pytest.mark.integration

NODES = ("c17", "c21")
NS = "k8s.io"
ROSIE = ("docker.io/library/rosie:latest", "docker.io/library/rosie:test")
LAYERED = "docker.io/library/layered:latest"


@pytest.fixture(scope="session")
def nodes() -> dict[str, Any]:
    """nodes.json; skips (or fails under CI) when the nodes are not up."""
    path = rig_dir() / "nodes" / "nodes.json"
    problem = None
    loaded: dict[str, Any] | None = None
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError:
        problem = f"no nodes: {path} is missing (bash integration/nodes.sh up)"
    if loaded is not None:
        for name, node in loaded["nodes"].items():
            try:
                sockets.create_connection(("127.0.0.1", node["ssh_port"]), timeout=5).close()
            except OSError as exc:
                problem = f"node {name}'s sshd is down: {exc}"
            if not Path(node["socket"]).exists():
                problem = f"node {name} is down: no {node['socket']}"
    if problem:
        if os.environ.get("CI") or os.environ.get("SHIPIT_REQUIRE_RIG"):
            pytest.fail(problem + " — and $CI/$SHIPIT_REQUIRE_RIG says the rig is required")
        pytest.skip(problem)
    assert loaded is not None
    return loaded


def ctr(nodes: dict[str, Any], node: str, *args: str, check: bool = True) -> str:
    """The node's own ctr, as root on the host (``ctr run`` needs root)."""
    info = nodes["nodes"][node]
    done = subprocess.run(
        [info["ctr"], "--address", info["socket"], "--namespace", NS, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"ctr {' '.join(args)} on {node}: {done.stderr.strip()}")
    return done.stdout


def clear(nodes: dict[str, Any], node: str, *refs: str) -> None:
    """Remove ``refs`` and let the garbage collector take their content at once."""
    listed = set(ctr(nodes, node, "images", "ls", "--quiet").split())
    gone = [r for r in refs if r in listed]
    if gone:
        ctr(nodes, node, "images", "rm", "--sync", *gone)


def refs(nodes: dict[str, Any], node: str) -> set[str]:
    return set(ctr(nodes, node, "images", "ls", "--quiet").split())


def run(nodes: dict[str, Any], node: str, ref: str) -> str:
    """``ctr run --rm``: the proof that the image is unpacked and usable on the node."""
    return ctr(nodes, node, "run", "--rm", ref, f"shipit-test-{os.getpid()}")


def exported(nodes: dict[str, Any], node: str, ref: str, folder: Path) -> Path:
    """``ctr images export``: fails unless every blob of the image is there."""
    out = folder / f"{node}-{ref.rsplit('/', 1)[-1].replace(':', '-')}.tar"
    ctr(nodes, node, "images", "export", str(out), ref)
    assert out.stat().st_size > 0
    return out


def alias(nodes: dict[str, Any], node: str, kind: str = "direct") -> str:
    return nodes["nodes"][node]["aliases"][kind]


def shipit(*args: object, timeout: float = 600) -> subprocess.CompletedProcess:
    from conftest import run_shipit

    return run_shipit(*args, timeout=timeout)


def ship_json(*args: object) -> dict[str, Any]:
    done = shipit(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _load_and_ship_to_every_node(rig: dict, nodes: dict, archive: Path, *options: str) -> str:
    """Load ``archive`` (of MULTI) into d26c, whose containerd store keeps its index as it
    is, then ship MULTI from there to every node at once, with ``options`` both times.
    Returns the reference the nodes hold it by."""
    remove(rig, "d26c", MULTI)
    loaded = shipit("load", archive, "--to", socket(rig, "d26c"), *options)
    assert loaded.returncode == 0, loaded.stderr
    full = f"docker.io/library/{MULTI}"
    for node in NODES:
        clear(nodes, node, full)
    done = ship_json(
        MULTI,
        "--from",
        socket(rig, "d26c"),
        *(a for node in NODES for a in ("--to", alias(nodes, node))),
        *options,
        "--ssh-config",
        nodes["ssh"]["config"],
    )
    assert all(t["ok"] for t in done["targets"]), done
    return full


def _listed(nodes: dict, node: str, ref: str) -> str:
    """The line `ctr images ls` shows for ``ref`` on ``node``."""
    listing = ctr(nodes, node, "images", "ls")
    return next(x for x in listing.splitlines() if x.startswith(ref + " "))


@pytest.mark.parametrize("engine", ["d20", "d26", "d26c"])
def test_ship_from_each_engine_lands_on_both_nodes(rig, nodes, tmp_path, engine):
    """The rosie pair and the multi-layer image, from each engine to both containerd
    versions in one command: full references, runnable, complete."""
    for node in NODES:
        clear(nodes, node, *ROSIE, LAYERED)
    done = ship_json(
        "rosie:latest",
        "rosie:test",
        "layered:latest",
        "--from",
        socket(rig, engine),
        *(a for node in NODES for a in ("--to", alias(nodes, node))),
        "--ssh-config",
        nodes["ssh"]["config"],
    )
    assert [t["ok"] for t in done["targets"]] == [True, True], done
    for target in done["targets"]:
        report = target["report"]
        assert report["target"]["store"] == "containerd"
        assert report["compression"].startswith("zstd"), report
    for node in NODES:
        assert {*ROSIE, LAYERED} <= refs(nodes, node)
        assert "Hello, World!" in run(nodes, node, ROSIE[1])
        assert "layered ok" in run(nodes, node, LAYERED)
        exported(nodes, node, ROSIE[0], tmp_path)
        exported(nodes, node, LAYERED, tmp_path)


def test_an_index_with_an_absent_platform_and_attestations_lands(rig, nodes, tmp_path):
    """What the containerd store saves when one platform was pulled: the index names
    arm64 too (absent) and attestations; `ctr import` of such an archive by hand fails."""
    partial = tmp_path / "partial.tar"
    partial.write_bytes(
        multi_platform_archive(
            [MULTI],
            multi_images()[:1],
            absent=[{"architecture": "arm64", "os": "linux", "variant": "v8"}],
            attest=True,
        )
    )
    full = _load_and_ship_to_every_node(rig, nodes, partial)
    for node in NODES:
        assert full in refs(nodes, node)
        line = _listed(nodes, node, full)
        assert "linux/amd64" in line and "arm64" not in line, line
        assert "Hello, World!" in run(nodes, node, full)
        exported(nodes, node, full, tmp_path)


@pytest.mark.parametrize("node", NODES)
def test_redeploy_sends_only_the_changed_layer(rig, nodes, tmp_path, node):
    _build_app(rig, "d26", tmp_path / "app")
    v1, v2 = "docker.io/library/app:v1", "docker.io/library/app:v2"
    clear(nodes, node, v1, v2)
    common = ("--from", socket(rig, "d26"), "--to", alias(nodes, node))
    common += ("--ssh-config", nodes["ssh"]["config"])
    first = ship_json("app:v1", *common)
    # (busybox may be there already, from rosie)
    assert first["layers_sent"] >= 2 and first["bytes_sent"] > BASE_MB * 1e6 / 4
    second = ship_json("app:v2", *common)
    assert second["bytes_sent"] <= 0.02 * first["bytes_sent"], second
    assert second["layers_skipped"] >= 2  # busybox and the base stayed put
    assert second["layers_from_memo"] >= 2, second  # and were not even compressed again
    again = ship_json("app:v2", *common)
    assert again["layers_sent"] == 0, again
    # The skipped blobs really are in the content store: v2 survives the loss of v1,
    # runs and exports.
    ctr(nodes, node, "images", "rm", "--sync", v1)
    assert "app v2 ok" in run(nodes, node, v2)
    exported(nodes, node, v2, tmp_path)


def test_fan_out_to_two_nodes_and_a_docker_engine(rig, nodes, ssh_config, tmp_path):
    for node in NODES:
        clear(nodes, node, *ROSIE, LAYERED)
    remove(rig, "d20", "rosie:latest")
    # One ssh config naming the rig's engines and the nodes.
    both = tmp_path / "both_config"
    both.write_text(Path(ssh_config).read_text() + "\n" + Path(nodes["ssh"]["config"]).read_text())
    done = shipit(
        "rosie:latest",
        "--from",
        socket(rig, "d26"),
        "--to",
        alias(nodes, "c17"),
        "--to",
        alias(nodes, "c21"),
        "--to",
        "rig-d20",
        "--ssh-config",
        both,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines[1:]] == ["ok", "ok", "ok"], done.stdout
    for node in NODES:
        assert "Hello, World!" in run(nodes, node, ROSIE[0])
    out = docker_cli(rig, "d20", "run", "--rm", "--network", "none", "rosie:latest")
    assert "Hello, World!" in out


@pytest.mark.parametrize(("node", "kind"), [("c17", "sudo"), ("c21", "sudo"), ("c21", "k3s")])
def test_sudo_user_and_k3s_alias(rig, nodes, node, kind):
    clear(nodes, node, *refs(nodes, node))  # nothing shares rosie's layer: it must be sent
    to = alias(nodes, node, kind)
    info = shipit("info", to, "--json", "--ssh-config", nodes["ssh"]["config"])
    assert info.returncode == 0, info.stderr
    about = json.loads(info.stdout)
    assert about["kind"] == "containerd" and about["namespace"] == NS
    assert about["sudo"] is (kind == "sudo")
    assert about["containerd_version"].startswith(nodes["nodes"][node]["version"])
    if kind == "k3s":
        assert about["ctr"].endswith("k3s ctr")
    done = ship_json(
        "rosie:latest",
        "--from",
        socket(rig, "d26"),
        "--to",
        to,
        "--ssh-config",
        nodes["ssh"]["config"],
    )
    assert done["layers_sent"] == 1
    assert "Hello, World!" in run(nodes, node, ROSIE[0])


@pytest.mark.parametrize("node", NODES)
def test_a_user_without_access_gets_one_line(rig, nodes, node):
    to = alias(nodes, node, "none")
    done = shipit(
        "rosie:latest",
        "--from",
        socket(rig, "d26"),
        "--to",
        to,
        "--ssh-config",
        nodes["ssh"]["config"],
    )
    assert done.returncode == 4, done
    lines = said(done.stderr)
    assert len(lines) == 1, done.stderr
    assert "permission denied" in lines[0] and "sudo -n" in lines[0], lines[0]


def test_a_namespace_the_node_lacks_is_one_line(rig, nodes):
    to = f"ctr://{alias(nodes, 'c17')}?namespace=nope"
    done = shipit(
        "rosie:latest",
        "--from",
        socket(rig, "d26"),
        "--to",
        to,
        "--ssh-config",
        nodes["ssh"]["config"],
    )
    assert done.returncode == 2, done
    assert len(said(done.stderr)) == 1, done.stderr
    assert "no namespace 'nope'" in done.stderr and "k8s.io" in done.stderr


def test_a_blob_lost_between_check_and_import_is_sent_again(rig, nodes, tmp_path, monkeypatch):
    """The node loses a layer it said it had (garbage collection, someone's `ctr content
    rm`) after shipit listed its content store: the image is found incomplete and the ship
    is retried once with everything, so what lands is complete."""
    from shipit import api
    from shipit.containerd.target import ContainerdTarget

    node = "c21"
    _build_app(rig, "d26", tmp_path / "app")
    v1, v2 = "docker.io/library/app:v1", "docker.io/library/app:v2"
    clear(nodes, node, v1, v2)
    options = api.ShipOptions(connect=api.Connect(ssh_config=nodes["ssh"]["config"]))
    api.ship(["app:v1"], alias(nodes, node), source=socket(rig, "d26"), options=options)
    layers = json.loads(ctr(nodes, node, "content", "get", _manifest_of(nodes, node, v1)))
    base = max(layers["layers"], key=lambda layer: layer["size"])["digest"]
    listed = ContainerdTarget.holdings

    def holdings_then_lose_the_base(self, layers):
        found = listed(self, layers)
        ctr(nodes, node, "images", "rm", "--sync", v1)
        ctr(nodes, node, "content", "rm", base)
        return found

    monkeypatch.setattr(ContainerdTarget, "holdings", holdings_then_lose_the_base)
    report = api.ship(["app:v2"], alias(nodes, node), source=socket(rig, "d26"), options=options)
    assert report.attempts == 2, report
    assert base in ctr(nodes, node, "content", "ls", "--quiet").split()
    assert "app v2 ok" in run(nodes, node, v2)
    exported(nodes, node, v2, tmp_path)


def _manifest_of(nodes: dict[str, Any], node: str, ref: str) -> str:
    line = next(x for x in ctr(nodes, node, "images", "ls").splitlines() if x.startswith(ref + " "))
    return line.split()[2]


def test_a_rejected_import_names_nothing_and_leaves_no_blob(rig, nodes):
    """containerd 2.1 has the erofs snapshotter, but its transfer service unpacks only for
    the snapshotters it is configured for: the import is refused after the upload, in one
    line, and neither a name nor a blob stays behind."""
    import time

    node = "c21"
    clear(nodes, node, *ROSIE, LAYERED)
    before = set(ctr(nodes, node, "content", "ls", "--quiet").split())
    to = f"ctr://{alias(nodes, node)}?snapshotter=erofs"
    done = shipit(
        "rosie:latest",
        "--from",
        socket(rig, "d26"),
        "--to",
        to,
        "--ssh-config",
        nodes["ssh"]["config"],
    )
    assert done.returncode == 5, done
    assert len(said(done.stderr)) == 1, done.stderr
    assert "containerd rejected the image" in done.stderr
    assert ROSIE[0] not in refs(nodes, node)
    for _ in range(50):  # the import's lease is gone; the collector takes what it held
        if set(ctr(nodes, node, "content", "ls", "--quiet").split()) <= before:
            break
        time.sleep(0.2)
    assert set(ctr(nodes, node, "content", "ls", "--quiet").split()) <= before


def test_two_platforms_land_whole_and_the_nodes_one_is_unpacked(rig, nodes, tmp_path):
    """--platform twice: the index keeps both (every blob there: `export --all-platforms`
    works), and the node's own platform is unpacked and runs. containerd 1.7's transfer
    service cannot unpack an all-platform import, so there ctr imports it itself."""
    complete = tmp_path / "complete.tar"
    complete.write_bytes(multi_platform_archive([MULTI], multi_images()))
    both = ("--platform", "linux/amd64", "--platform", "linux/arm64")
    full = _load_and_ship_to_every_node(rig, nodes, complete, *both)
    for node in NODES:
        line = _listed(nodes, node, full)
        assert "linux/amd64" in line and "linux/arm64" in line, line
        assert "Hello, World!" in run(nodes, node, full)
        out = tmp_path / f"{node}-all.tar"
        ctr(nodes, node, "images", "export", "--all-platforms", str(out), full)
        assert out.stat().st_size > 0


def test_a_shipped_image_runs_after_containerd_restarts(rig, nodes):
    """What landed is on the node's disk, not only in containerd's memory: after a restart
    of containerd the image is still complete, unpacked and runs."""
    import signal
    import time

    node = "c17"
    clear(nodes, node, *ROSIE)
    done = ship_json(
        "rosie:latest",
        "--from",
        socket(rig, "d26"),
        "--to",
        alias(nodes, node),
        "--ssh-config",
        nodes["ssh"]["config"],
    )
    assert done["layers_sent"] + done["layers_skipped"] == 1
    pidfile = Path(nodes["nodes_dir"]) / node / "containerd.pid"
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    for _ in range(300):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    env = {**os.environ, "SHIPIT_NODES_SSH_PORT": str(nodes["nodes"]["c17"]["ssh_port"])}
    script = Path(__file__).resolve().parents[2] / "integration" / "nodes.sh"
    up = subprocess.run(["bash", str(script), "up"], capture_output=True, text=True, env=env)
    assert up.returncode == 0, up.stderr
    assert int(pidfile.read_text()) != pid
    check = ctr(nodes, node, "images", "check")
    line = next(x for x in check.splitlines() if x.startswith(ROSIE[0] + " "))
    assert "complete" in line and line.split()[-1] == "true", line
    assert "Hello, World!" in run(nodes, node, ROSIE[0])
