"""Staged loads: layers go in bottom-up as throwaway stage images, then the image itself;
what lands is the source's image, stage images never outlive the ship, and a stage the
engine rejects fails the ship cleanly."""

from __future__ import annotations

import dataclasses

import pytest
from engines import docker_cli, identity, inspect, remove, run_image, socket

import shipit.daemon.staging
from shipit.api import Connect, ShipOptions, ship
from shipit.compression import LONG_FROM_LEVEL, Codec
from shipit.errors import EngineError, Unsupported

pytestmark = pytest.mark.integration

#: target → source (the rig's sources hold layered:latest; d26 cannot ship to itself)
SOURCE = {"d20": "d26", "d26": "d20", "d26c": "d26", "d28": "d26c", "d28c": "d28"}


def _stage_images(rig, engine: str) -> list[str]:
    out = docker_cli(rig, engine, "images", "-a", "--format", "{{.Repository}}:{{.Tag}}")
    return [line for line in out.splitlines() if shipit.daemon.staging.STAGE_REPO in line]


def _ship(rig, ssh_config, engine: str, **kwargs):
    return ship(
        ["layered:latest"],
        rig["engines"][engine]["ssh_alias"],
        source=socket(rig, SOURCE[engine]),
        options=ShipOptions(connect=Connect(ssh_config=ssh_config), **kwargs),
    )


@pytest.mark.parametrize("engine", ["d20", "d26", "d26c", "d28", "d28c"])
def test_staged_ship_lands_the_image(rig, ssh_config, monkeypatch, tmp_path, engine):
    monkeypatch.setattr(shipit.daemon.staging, "STAGE_BYTES", 1)  # one stage per layer sent
    before = inspect(rig, SOURCE[engine], "layered:latest")
    assert before is not None
    remove(rig, engine, "layered:latest")
    # --full: every layer is sent (and staged) even if another image on the target has it
    report = _ship(rig, ssh_config, engine, staged=True, full=True)
    layers = len(before["RootFS"]["Layers"])
    assert report.layers_sent == layers and report.layers_skipped == 0
    assert report.stages == layers - 1, report.to_dict()  # the top one goes with the image
    # The image's own documents waited for the stage below: mid-transfer target work.
    phases = report.phases
    assert 0 <= phases["target_registering_stages"] <= phases["transfer"], phases
    landed = inspect(rig, engine, "layered:latest")
    assert landed is not None and identity(landed) == identity(before)
    assert _stage_images(rig, engine) == []
    assert "layered ok" in run_image(rig, engine, "layered:latest")
    # Complete, not just runnable: every blob is there to be saved again.
    docker_cli(rig, engine, "save", "-o", str(tmp_path / "again.tar"), "layered:latest")

    again = _ship(rig, ssh_config, engine, staged=True)  # the target has it all now
    assert again.layers_sent == 0 and again.stages == 0
    assert _stage_images(rig, engine) == []


@pytest.mark.parametrize(
    ("engine", "wire"),
    [("d20", "gzip"), ("d26", "zstd"), ("d26c", "zstd"), ("d28", "zstd"), ("d28c", "zstd")],
)
@pytest.mark.parametrize("staged", [True, False])
def test_a_compressed_upload_carries_plain_layers(
    rig, ssh_config, monkeypatch, engine, wire, staged
):
    """--wire: each upload (every stage and the image's own) is one compressed stream
    around plain layers; the engine decompresses it and the source's image lands."""
    monkeypatch.setattr(shipit.daemon.staging, "STAGE_BYTES", 1)
    before = inspect(rig, SOURCE[engine], "layered:latest")
    assert before is not None
    remove(rig, engine, "layered:latest")
    report = _ship(rig, ssh_config, engine, staged=staged, full=True, wire=Codec(wire))
    assert (
        report.compression == "none"
        and report.wire_compression == f"{wire}:{1 if wire == 'gzip' else 3}"
    )
    assert report.stages == (len(before["RootFS"]["Layers"]) - 1 if staged else 0)
    # bytes_sent counts the compressed upload(s): well under the tar that went into them,
    # which is the plain layers read (plus the stages' small configs and manifests)
    assert report.bytes_before_wire is not None, report.to_dict()
    assert 0 < report.bytes_sent < report.bytes_before_wire * 0.9, report.to_dict()
    assert report.bytes_before_wire >= report.bytes_read * 0.95, report.to_dict()
    landed = inspect(rig, engine, "layered:latest")
    assert landed is not None and identity(landed) == identity(before)
    assert _stage_images(rig, engine) == []
    assert "layered ok" in run_image(rig, engine, "layered:latest")


def test_plain_layers_kept_by_the_containerd_store_are_found_again(rig, ssh_config, tmp_path):
    """--wire zstd into the containerd store: it keeps the layers plain, and the next ship
    the same way finds every one of them there (probed by the plain blob) and sends none."""
    remove(rig, "d26c", "layered:latest")
    first = _ship(rig, ssh_config, "d26c", wire=Codec("zstd"))
    assert (first.compression, first.wire_compression) == ("none", "zstd:3")
    assert first.layers_sent == first.layers > 0
    landed = inspect(rig, "d26c", "layered:latest")
    assert landed is not None
    # complete: the plain blobs are in the content store, so it saves again, plain
    docker_cli(rig, "d26c", "save", "-o", str(tmp_path / "again.tar"), "layered:latest")
    remove(rig, "d26c", "layered:latest")
    docker_cli(rig, "d26c", "load", "-i", str(tmp_path / "again.tar"))
    again = _ship(rig, ssh_config, "d26c", wire=Codec("zstd"))
    assert again.layers_sent == 0 and again.layers_skipped == again.layers, again.to_dict()
    assert inspect(rig, "d26c", "layered:latest")["Id"] == landed["Id"]
    assert "layered ok" in run_image(rig, "d26c", "layered:latest")


def test_a_zstd_upload_is_refused_before_engine_20_10_sees_a_byte(rig):
    """By socket nothing stands in front of Engine 20.10 to undo a zstd upload."""
    with pytest.raises(Unsupported, match="cannot load a zstd upload"):
        ship(
            ["layered:latest"],
            socket(rig, "d20"),
            source=socket(rig, SOURCE["d20"]),
            options=ShipOptions(full=True, wire=Codec("zstd")),
        )


@pytest.mark.parametrize("level", [3, LONG_FROM_LEVEL])
@pytest.mark.parametrize("engine", ["d20", "d26c"])
def test_staged_zstd_uploads_over_ssh_land(rig, ssh_config, monkeypatch, engine, level):
    """Over SSH the host's zstd undoes each stage's upload in front of Engine 20.10, and
    Engine 26 reads its own. Each stage ends its frame after its layers, the next frame
    follows, also at the link-bound level (zstd 6, long-distance matching)."""
    monkeypatch.setattr(shipit.daemon.staging, "STAGE_BYTES", 1)
    before = inspect(rig, SOURCE[engine], "layered:latest")
    assert before is not None
    remove(rig, engine, "layered:latest")
    wire = Codec.parse("zstd", level)
    report = _ship(rig, ssh_config, engine, staged=True, full=True, wire=wire)
    assert (report.compression, report.wire_compression) == ("none", f"zstd:{level}")
    assert report.stages == len(before["RootFS"]["Layers"]) - 1
    assert 0 < report.bytes_sent < 0.9 * (report.bytes_before_wire or 0)
    assert identity(inspect(rig, engine, "layered:latest")) == identity(before)
    assert _stage_images(rig, engine) == []
    assert "layered ok" in run_image(rig, engine, "layered:latest")


@pytest.mark.parametrize("engine", ["d20", "d26c", "d28c"])
def test_rejected_stage_fails_cleanly(rig, ssh_config, monkeypatch, engine):
    """A stage whose config names the wrong diff_id is refused by the engine: the ship
    fails with the engine's words, and neither the image nor any stage is left."""
    monkeypatch.setattr(shipit.daemon.staging, "STAGE_BYTES", 1)
    documents = shipit.daemon.staging.StagedFeed._documents

    def lying(self, name, layers, tar):
        if len(layers) == 2:  # the second stage lies about its top layer
            layers = [*layers[:-1], dataclasses.replace(layers[-1], diff_id="sha256:" + "0" * 64)]
        return documents(self, name, layers, tar)

    monkeypatch.setattr(shipit.daemon.staging.StagedFeed, "_documents", lying)
    remove(rig, engine, "layered:latest")
    with pytest.raises(EngineError) as failure:
        _ship(rig, ssh_config, engine, staged=True, full=True)
    assert "loading into" in str(failure.value) and "diff" in str(failure.value).lower()
    assert inspect(rig, engine, "layered:latest") is None
    assert _stage_images(rig, engine) == []
    monkeypatch.undo()
    _ship(rig, ssh_config, engine)  # other tests ship from this engine: put it back
    assert inspect(rig, engine, "layered:latest") is not None
