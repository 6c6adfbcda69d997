"""Which engine failures are only bad timing, and worth trying again."""

from __future__ import annotations

import io
import json
import tarfile

from shipit.archive.reader import BlobRecord
from shipit.daemon.delta import _vanishing, probe_archive
from shipit.errors import EngineError, VerificationFailed
from shipit.platforms import Platform
from shipit.shipping import _Outcome, _raced, _worth_retrying

# As Docker 26 on the containerd store answered an image list while a concurrent ship
# deleted its probe image.
RACE = (
    "500 Server Error for http+docker://localhost/v1.45/images/json?all=1: Internal Server "
    'Error ("failed to calculate size of image shipit-probe.invalid/probe:1796138978-6e32b7: '
    "failed to get rootfs of image shipit-probe.invalid/probe:1796138978-6e32b7: rpc error: "
    'code = NotFound desc = content digest sha256:301540da2a9c: not found")'
)


def test_an_image_deleted_during_the_list_is_timing():
    assert _vanishing(Exception(RACE))
    # the same race caught while the engine reads the image's config
    assert _vanishing(
        Exception(
            '500 Server Error: Internal Server Error ("failed to read config content: '
            'content digest sha256:a4e5cbe32910: not found")'
        )
    )


def test_other_list_failures_are_not():
    assert not _vanishing(Exception('500 Server Error: Internal Server Error ("no space left")'))
    assert not _vanishing(Exception('404 Client Error: Not Found ("page not found")'))
    assert not _vanishing(Exception("failed to calculate size of image x: permission denied"))


# As Docker 26 on the containerd store answered a load that moved soak:latest while its
# garbage collector took the snapshot the old image alone held.
UNPACK_RACE = (
    "loading into rig-d26c: failed to unpack loaded image: failed to prepare extraction "
    'snapshot "extract-669535016-Uhjf sha256:aad007ffe3dd": parent snapshot '
    "sha256:21d093807253 does not exist: not found"
)
LOCKED = (
    "loading into rig-d26c: failed to copy: ref moby/1/index-index.json locked for 1.2s "
    "(since 2026-12-03 12:00:00): unavailable"
)


def test_a_load_that_lost_a_race_in_the_engine_is_loaded_again_as_it_was():
    assert _raced(_Outcome(error=EngineError(UNPACK_RACE)))
    assert _raced(_Outcome(error=EngineError(LOCKED)))


def test_a_load_that_failed_otherwise_is_not():
    lost = "failed to extract layer sha256:a4: content digest sha256:a4: not found"
    assert not _raced(_Outcome(error=EngineError(lost)))
    assert not _raced(_Outcome(error=EngineError("no space left on device")))
    # the same words, but not from the engine: a check of what landed
    assert not _raced(_Outcome(error=VerificationFailed("parent snapshot does not exist")))
    assert not _raced(_Outcome())


def test_a_missing_blob_after_skipping_some_is_worth_a_whole_attempt():
    record = BlobRecord.plain_layer("sha256:" + "a" * 64, "sha256:" + "a" * 64, 10)
    lost = _Outcome(error=EngineError("content digest not found"))
    assert not _worth_retrying(lost)  # nothing was skipped: sending more cannot help
    lost.result.skipped.append(record)
    assert _worth_retrying(lost)


def _first_layer(archive: bytes) -> str:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest_digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.loads(tar.extractfile(f"blobs/sha256/{manifest_digest}").read())  # type: ignore[union-attr]
    return manifest["layers"][0]["digest"]


def test_probes_share_no_dummy_layer():
    """Each probe's dummy layer is its own, so no probe builds on a snapshot another
    probe left to the garbage collector."""
    diff_id = "sha256:" + "b" * 64
    record = BlobRecord.plain_layer(diff_id, diff_id, 0)
    first = probe_archive(record, "shipit-probe.invalid/probe:1-a", Platform.host())
    again = probe_archive(record, "shipit-probe.invalid/probe:1-b", Platform.host())
    assert _first_layer(first) != _first_layer(again)
