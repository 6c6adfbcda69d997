"""Redeploys send only what the target lacks, on both image stores; one read of the
source feeds several targets, and one failing target leaves the others whole."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from engines import (
    ctr,
    docker_cli,
    inspect,
    kill_sessions,
    remove,
    run_image,
    session_pids,
    socket,
)
from test_ship import BIG, big_image  # noqa: F401 - a fixture: ~800 MB, built once per rig

from shipit.daemon.delta import PROBE_REPO

pytestmark = pytest.mark.integration

BASE_MB = 120


def _build_app(rig, engine: str, folder: Path) -> None:
    """app:v1 and app:v2 on ``engine``: one ≥ 100 MB base, one small layer that differs."""
    if inspect(rig, engine, "app:v1") and inspect(rig, engine, "app:v2"):
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "base.bin", "wb") as out:
        for _ in range(BASE_MB // 2):  # half incompressible, half compressible
            out.write(os.urandom(1 << 20))
            out.write(bytes(range(256)) * 4096)
    busybox = Path(rig["rig_dir"]) / "build" / "rosie" / "busybox"
    (folder / "busybox").write_bytes(
        busybox.read_bytes() if busybox.exists() else Path("/bin/busybox").read_bytes()
    )
    os.chmod(folder / "busybox", 0o755)
    for version in ("v1", "v2"):
        (folder / "app.txt").write_text(f"app {version}\n" + "x" * 20000)
        (folder / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /busybox\nCOPY base.bin /base.bin\n"
            f'COPY app.txt /app.txt\nCMD ["/busybox", "echo", "app {version} ok"]\n'
        )
        subprocess.run(
            [
                rig["docker_cli"],
                "-H",
                socket(rig, engine),
                "build",
                "-q",
                "-t",
                f"app:{version}",
                str(folder),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )


def _ship(*args: object) -> dict:
    from conftest import run_shipit

    done = run_shipit(*args, "--json", timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _run_app(rig, engine: str, version: str) -> None:
    out = docker_cli(rig, engine, "run", "--rm", "--network", "none", f"app:{version}")
    assert f"app {version} ok" in out


@pytest.mark.parametrize(
    ("source", "target"),
    [("d26", "d20"), ("d20", "d26"), ("d26", "d26c"), ("d28", "d28c"), ("d28c", "d20")],
)
def test_redeploy_sends_only_the_changed_layer(rig, ssh_config, tmp_path, source, target):
    _build_app(rig, source, tmp_path / "app")
    remove(rig, target, "app:v1", "app:v2")
    to = rig["engines"][target]["ssh_alias"]
    common = ("--from", socket(rig, source), "--to", to, "--ssh-config", ssh_config)
    first = _ship("app:v1", *common)
    # The base goes; busybox may stay put (the rig's rosie image can hold the same layer).
    assert first["layers_skipped"] <= 1 and first["bytes_sent"] > BASE_MB * 1e6 / 4, first
    second = _ship("app:v2", *common)
    assert second["bytes_sent"] <= 0.02 * first["bytes_sent"], second
    assert second["layers_skipped"] >= 2  # busybox and the 120 MB base stayed put
    again = _ship("app:v2", *common)
    assert again["layers_sent"] == 0, again
    _run_app(rig, target, "v2")
    if rig["engines"][target]["store"] == "containerd":
        # The skipped blobs really are in the content store: the image survives the loss
        # of app:v1 and can still be saved (what an image missing blobs cannot do).
        docker_cli(rig, target, "rmi", "app:v1")
        docker_cli(rig, target, "save", "-o", str(tmp_path / "v2.tar"), "app:v2")
        _run_app(rig, target, "v2")


def test_containerd_redeploy_names_unchanged_layers_from_the_memo(
    rig, ssh_config, tmp_path, monkeypatch
):
    """The second ship does not compress the unchanged layers again: the memo names their
    blobs and the probes find them. A memo entry the target lacks only costs the probe."""
    _build_app(rig, "d26", tmp_path / "app")
    remove(rig, "d26c", "app:v1", "app:v2")
    memo = tmp_path / "memo"
    monkeypatch.setenv("SHIPIT_CACHE_DIR", str(memo))
    common = ("--from", socket(rig, "d26"), "--to", "rig-d26c", "--ssh-config", ssh_config)
    first = _ship("app:v1", *common)
    assert first["layers_from_memo"] == 0 and first["layers_recompressed"] == 3
    entries = list((memo / "compressed" / "zstd-3").iterdir())
    assert len(entries) == 3
    second = _ship("app:v2", *common)
    assert second["layers_from_memo"] == 2, second  # busybox and the base
    assert second["layers_recompressed"] == 1 and second["layers_sent"] == 1
    assert second["layers_skipped"] == 2

    # Every entry now names a blob nobody has: the layers are compressed again, their
    # real blobs are found on the target all the same, and nothing extra is sent.
    for entry in entries:
        value = json.loads(entry.read_text())
        entry.write_text(json.dumps({**value, "digest": "sha256:" + "0" * 64}))
    remove(rig, "d26c", "app:v2")
    third = _ship("app:v2", *common)
    assert third["layers_from_memo"] == 0 and third["layers_recompressed"] == 3
    assert third["layers_skipped"] == 2 and third["layers_sent"] == 1, third
    docker_cli(rig, "d26c", "rmi", "app:v1")
    docker_cli(rig, "d26c", "save", "-o", str(tmp_path / "v2.tar"), "app:v2")
    _run_app(rig, "d26c", "v2")


def _plain_load(rig, tmp_path: Path, version: str) -> None:
    """``docker load`` of a ``docker save`` from the classic source: the containerd
    store then holds the layers as uncompressed blobs (as after a cold ship over a slow
    link, which sends them plain), not the zstd blobs shipit would compress them to."""
    archive = tmp_path / f"{version}.tar"
    docker_cli(rig, "d26", "save", "-o", str(archive), f"app:{version}")
    docker_cli(rig, "d26c", "load", "-i", str(archive))


def test_containerd_finds_plain_blobs_a_plain_load_left(rig, ssh_config, tmp_path):
    """Layers the content store holds uncompressed are not sent again, although a new
    layer is compressed: the manifest names them as the plain blobs that are there."""
    _build_app(rig, "d26", tmp_path / "app")
    remove(rig, "d26c", "app:v1", "app:v2")
    _plain_load(rig, tmp_path, "v1")
    report = _ship(
        "app:v2", "--from", socket(rig, "d26"), "--to", "rig-d26c", "--ssh-config", ssh_config
    )
    assert report["layers_skipped"] == 2 and report["layers_sent"] == 1, report
    assert report["bytes_sent"] < 1e6, report
    docker_cli(rig, "d26c", "rmi", "app:v1")
    docker_cli(rig, "d26c", "save", "-o", str(tmp_path / "v2.tar"), "app:v2")
    _run_app(rig, "d26c", "v2")


def test_containerd_snapshot_without_blob_is_not_trusted(rig, ssh_config, tmp_path):
    """A target whose snapshot exists but whose blob does not (deleted from the content
    store) gets the blob sent, so later saves work."""
    _build_app(rig, "d26", tmp_path / "app")
    remove(rig, "d26c", "app:v1", "app:v2")
    _plain_load(rig, tmp_path, "v1")
    base = (inspect(rig, "d26", "app:v1") or {})["RootFS"]["Layers"][1]  # the 120 MB one
    ctr(rig, "d26c", "content", "rm", base)
    assert base not in ctr(rig, "d26c", "content", "ls", "-q").split()
    report = _ship(
        "app:v2", "--from", socket(rig, "d26"), "--to", "rig-d26c", "--ssh-config", ssh_config
    )
    # The base is sent (busybox may be too: the engine may no longer list a broken app:v1).
    assert report["layers_skipped"] <= 1 and report["bytes_sent"] > BASE_MB * 1e6 / 4, report
    docker_cli(rig, "d26c", "rmi", "app:v1")
    docker_cli(rig, "d26c", "save", "-o", str(tmp_path / "v2.tar"), "app:v2")
    _run_app(rig, "d26c", "v2")


def _ship_meanwhile(rig, ssh_config, tmp_path, monkeypatch, target: str, meanwhile):
    """Ship app:v2 onto app:v1 with ``meanwhile(delta)`` run after the check, before the
    load (as another client would)."""
    from shipit import api
    from shipit.daemon.delta import Delta

    monkeypatch.setenv("SHIPIT_CACHE_DIR", str(tmp_path / "memo"))
    options = api.ShipOptions(connect=api.Connect(ssh_config=str(ssh_config)))
    api.ship(["app:v1"], f"rig-{target}", source=socket(rig, "d26"), options=options)
    warm = Delta.warm

    def warm_then(self, memo, codec):
        warm(self, memo, codec)
        meanwhile(self)

    monkeypatch.setattr(Delta, "warm", warm_then)
    return api.ship(["app:v2"], f"rig-{target}", source=socket(rig, "d26"), options=options)


def _complete(rig, tmp_path, target: str) -> None:
    """app:v2 on ``target`` runs and saves whole (every blob there), app:v1 gone."""
    remove(rig, target, "app:v1")
    docker_cli(rig, target, "save", "-o", str(tmp_path / "v2.tar"), "app:v2")
    _run_app(rig, target, "v2")


@pytest.mark.parametrize("target", ["d26c", "d28c"])
def test_containerd_holder_removed_after_the_check_keeps_its_blobs(
    rig, ssh_config, tmp_path, monkeypatch, target
):
    """The image that held the blobs shipit found is deleted (and garbage collected)
    between the check and the load: the probes shipit kept hold those blobs, so the one
    load skips them and what lands is complete."""
    _build_app(rig, "d26", tmp_path / "app")
    remove(rig, target, "app:v1", "app:v2")
    held: list[str] = []

    def remove_the_holder(delta) -> None:
        held.extend(d for d, there in delta.probed.items() if there)
        remove(rig, target, "app:v1")

    report = _ship_meanwhile(rig, ssh_config, tmp_path, monkeypatch, target, remove_the_holder)
    assert held and report.attempts == 1 and report.layers_skipped >= 1, (held, report)
    assert all(d in ctr(rig, target, "content", "ls", "-q").split() for d in held)
    probes = docker_cli(rig, target, "images", "-q", PROBE_REPO)
    assert not probes.strip(), "a kept probe was left behind"
    _complete(rig, tmp_path, target)


def test_containerd_blob_lost_after_the_check_is_sent_again(rig, ssh_config, tmp_path, monkeypatch):
    """The content store loses blobs shipit found there, and shipit's kept probes with
    them (a prune), between the check and the load: the probe after the load finds them
    gone, the ship is tried once more with every layer, and what lands is complete."""
    _build_app(rig, "d26", tmp_path / "app")
    remove(rig, "d26c", "app:v1", "app:v2")
    lost: list[str] = []

    def prune_probes_and_lose(delta) -> None:
        for digest, there in delta.probed.items():
            if there:
                ctr(rig, "d26c", "content", "rm", digest)
                lost.append(digest)
        remove(rig, "d26c", *delta.held.values())

    report = _ship_meanwhile(rig, ssh_config, tmp_path, monkeypatch, "d26c", prune_probes_and_lose)
    assert lost and report.attempts == 2, (lost, report)
    assert report.layers_skipped == 0, report
    assert all(d in ctr(rig, "d26c", "content", "ls", "-q").split() for d in lost)
    _complete(rig, tmp_path, "d26c")


def test_fan_out_to_three_engines(rig, ssh_config):
    targets = ["rig-d20", "rig-d26", "rig-d26c"]
    for engine in ("d20", "d26c"):  # d26 is the source (and a target too)
        remove(rig, engine, "layered:latest")
    from conftest import run_shipit

    done = run_shipit(
        "layered:latest",
        "--from",
        socket(rig, "d26"),
        "--ssh-config",
        ssh_config,
        *[a for t in targets for a in ("--to", t)],
        "--json",
        "--full",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["targets"]
    assert [r["target"] for r in results] == targets and all(r["ok"] for r in results)
    assert results[0]["report"]["compression"] in ("gzip:1", "none")  # Engine 20.10
    assert results[2]["report"]["compression"] == "zstd:3"
    for r in results:  # one after the other, the phases span the target's whole ship
        p = r["report"]["phases"]
        after = ("transfer", "target_after_last_byte", "waiting_for_other_targets", "verification")
        span = p["source_preparing"] + sum(p[k] for k in after)
        assert min(p.values()) >= 0 and span <= r["report"]["seconds"] + 0.005, p
    for engine in ("d20", "d26", "d26c"):
        assert "layered ok" in run_image(rig, engine, "layered:latest")


def test_fan_out_survives_one_target_dying(rig, ssh_config, big_image):  # noqa: F811
    for engine in ("d20", "d26c", "d26"):
        if engine != "d26":
            remove(rig, engine, BIG)
    victim = rig["engines"]["d20"]["ssh_user"]
    cmd = [
        "python",
        "-m",
        "shipit",
        BIG,
        "--from",
        socket(rig, "d26"),
        "--ssh-config",
        str(ssh_config),
        "--to",
        "rig-d20",
        "--to",
        "rig-d26c",
        "--json",
        "-q",
    ]
    import sys

    cmd[0] = sys.executable
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    killed = threading.Event()

    def kill_when_streaming() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if session_pids(rig, victim, "dial-stdio"):
                time.sleep(1.5)  # well into the stream
                kill_sessions(rig, victim)
                killed.set()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_streaming)
    killer.start()
    out, err = proc.communicate(timeout=900)
    killer.join()
    assert killed.is_set()
    assert proc.returncode != 0 and "Traceback" not in err
    results = {r["target"]: r for r in json.loads(out)["targets"]}
    assert not results["rig-d20"]["ok"] and results["rig-d26c"]["ok"], results
    assert inspect(rig, "d26c", BIG) is not None
    assert inspect(rig, "d20", BIG) is None  # no half image on the target that died
    docker_cli(rig, "d26c", "rmi", BIG)
