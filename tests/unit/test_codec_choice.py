"""The layer compression shipit picks for a target, from its engine and the measured link."""

from __future__ import annotations

import pytest

from shipit.api import choose_codec, choose_wire
from shipit.compression import Codec
from shipit.daemon.engine import EngineInfo
from shipit.errors import Unsupported
from shipit.target import Capabilities

INF = float("inf")
MB = 1e6


def _engine(store: str, zstd: bool) -> Capabilities:
    return EngineInfo(
        name="t",
        engine_version="26.1.5" if zstd else "20.10.24",
        api_version="1.45" if zstd else "1.41",
        os="linux",
        arch="amd64",
        kernel="6",
        image_store=store,
        storage_driver="overlay2",
        loads_zstd=zstd,
        needs_manifest_json=store == "classic",
    ).capabilities()


CLASSIC_20 = _engine("classic", False)
CLASSIC_26 = _engine("classic", True)
CONTAINERD = _engine("containerd", True)


@pytest.mark.parametrize(
    ("engine", "link", "expected"),
    [
        # On this machine (a unix socket): a classic store decompresses for nothing.
        (CLASSIC_20, INF, "none"),
        (CLASSIC_26, INF, "none"),
        (CONTAINERD, INF, "zstd:3"),  # it keeps blobs as sent: stay compact
        # Loopback SSH measures ~180 MB/s: fast enough that 20.10's gunzip is the bound.
        (CLASSIC_20, 180 * MB, "none"),
        (CLASSIC_26, 180 * MB, "zstd:3"),
        (CONTAINERD, 180 * MB, "zstd:3"),
        # A LAN-ish link.
        (CLASSIC_20, 40 * MB, "gzip:1"),
        (CLASSIC_26, 40 * MB, "zstd:3"),
        # 100 Mbit/s: the link is the bound, spend CPU on fewer bytes.
        (CLASSIC_20, 12.5 * MB, "gzip:3"),
        (CLASSIC_26, 12.5 * MB, "zstd:6"),
        (CONTAINERD, 12.5 * MB, "zstd:3"),  # same bytes every run: redeploys find them
        # Unknown (tcp://): the plain defaults.
        (CLASSIC_20, None, "gzip:1"),
        (CONTAINERD, None, "zstd:3"),
    ],
)
def test_codec_follows_engine_and_link(engine, link, expected):
    assert str(choose_codec(engine, None, link)) == expected


def test_a_fan_out_compresses_for_a_fast_ssh_link_but_not_a_local_socket():
    assert str(choose_codec(CLASSIC_20, None, 180 * MB, alone=False)) == "gzip:1"
    assert str(choose_codec(CLASSIC_20, None, INF, alone=False)) == "none"
    assert str(choose_codec(CLASSIC_26, None, INF, alone=False)) == "none"
    # ...and keeps the plain levels on a slow link: one compression fewer to run.
    assert str(choose_codec(CLASSIC_20, None, 12.5 * MB, alone=False)) == "gzip:1"
    assert str(choose_codec(CLASSIC_26, None, 12.5 * MB, alone=False)) == "zstd:3"


def test_asked_for_codec_wins_unless_unreadable():
    assert str(choose_codec(CLASSIC_26, Codec("gzip", 9), 12.5 * MB)) == "gzip:9"
    with pytest.raises(Unsupported, match="cannot load zstd"):
        choose_codec(CLASSIC_20, Codec("zstd"), INF)


def _shape(engine, link, *, requested=None, wire=None, alone=True, cold=False):
    layers, upload = choose_wire(
        engine,
        requested,
        choose_codec(engine, requested, link, alone=alone),
        wire,
        alone=alone,
        link=link,
        cold=cold,
    )
    return str(layers), str(upload) if upload else None


@pytest.mark.parametrize(
    ("engine", "link", "expected"),
    [
        # A classic store decompresses everything it loads: plain layers, compressed upload.
        (CLASSIC_20, 12.5 * MB, ("none", "gzip:3")),
        (CLASSIC_26, 12.5 * MB, ("none", "zstd:6")),
        (CLASSIC_26, 180 * MB, ("none", "zstd:3")),
        (CLASSIC_20, None, ("none", "gzip:1")),
        # Nothing to compress at all: nothing changes.
        (CLASSIC_20, 180 * MB, ("none", None)),
        (CLASSIC_26, INF, ("none", None)),
        # The containerd store keeps the layers as sent: they stay compressed.
        (CONTAINERD, 12.5 * MB, ("zstd:3", None)),
    ],
)
def test_a_lone_classic_target_gets_one_compressed_upload(engine, link, expected):
    assert _shape(engine, link) == expected


@pytest.mark.parametrize(
    ("link", "cold", "expected"),
    [
        # Cold, and the link is the bound: no layer waits in a spool for its size.
        (12.5 * MB, True, ("none", "zstd:6")),
        # It holds some of the layers compressed: the same bytes, found again.
        (12.5 * MB, False, ("zstd:3", None)),
        # A fast link keeps up with the spools: compact blobs.
        (180 * MB, True, ("zstd:3", None)),
        (INF, True, ("zstd:3", None)),
        (None, True, ("zstd:3", None)),
    ],
)
def test_a_containerd_store_gets_plain_layers_only_on_a_cold_ship_over_a_bound_link(
    link, cold, expected
):
    assert _shape(CONTAINERD, link, cold=cold) == expected
    assert _shape(CONTAINERD, link, cold=cold, alone=False) == ("zstd:3", None)
    assert _shape(CONTAINERD, link, cold=cold, requested=Codec("zstd")) == ("zstd:3", None)


def test_the_upload_stays_plain_in_a_fan_out_or_when_layers_are_asked_for():
    assert _shape(CLASSIC_26, 12.5 * MB, alone=False) == ("zstd:3", None)
    assert _shape(CLASSIC_26, 12.5 * MB, requested=Codec("gzip")) == ("gzip:1", None)


def test_a_forced_upload_compression():
    assert _shape(CLASSIC_20, 180 * MB, wire=Codec("gzip")) == ("none", "gzip:1")
    # forced, the layers inside go plain on either store unless asked for
    assert _shape(CONTAINERD, 12.5 * MB, wire=Codec("zstd")) == ("none", "zstd:3")
    assert _shape(CONTAINERD, 12.5 * MB, requested=Codec("zstd"), wire=Codec("zstd")) == (
        "zstd:3",
        "zstd:3",
    )
    assert _shape(CLASSIC_26, 12.5 * MB, wire=Codec("none")) == ("zstd:6", None)
    with pytest.raises(Unsupported, match="cannot load a zstd upload"):
        _shape(CLASSIC_20, 12.5 * MB, wire=Codec("zstd"))


def test_an_engine_that_reads_gzip_only_gets_zstd_undone_by_its_host():
    from dataclasses import replace

    carried = replace(CLASSIC_20, carried_compressions=frozenset({"zstd"}))
    assert _shape(carried, 12.5 * MB) == ("none", "zstd:6")  # the link is the bound
    assert _shape(carried, 40 * MB) == ("none", "zstd:3")
    assert _shape(carried, 180 * MB) == ("none", None)  # faster than compressing
    assert _shape(carried, 12.5 * MB, alone=False) == ("gzip:1", None)  # one codec for all
    assert _shape(carried, 12.5 * MB, wire=Codec("zstd")) == ("none", "zstd:3")
    # without a zstd on the host: gzip, as the engine reads
    assert _shape(CLASSIC_20, 12.5 * MB) == ("none", "gzip:3")
