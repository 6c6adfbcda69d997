"""Send a target only the layers it lacks — without ever leaving it an incomplete image.

**Classic store.** Layers are keyed by chain ID (the layer and everything below it). On
load the engine computes each layer's chain ID from the config and does not even open the
layer file when that chain exists (moby ``image/tar/load.go``). So a layer may be left out
when, at every position where the images being sent use it, its chain already exists on
the target. ``manifest.json`` still lists it.

**Containerd store.** A missing blob is fine only if the content store holds that exact
blob: when only the snapshot exists, the load "succeeds" but the image can never be saved
or pushed again. The Docker API (Engine 26) shows no content store, so shipit asks
containerd itself, with a *probe load*: a two-layer image whose first layer is a tiny
dummy of its own, shipped with it, and whose second layer is the candidate blob under a layer media
type no decompressor knows. Its chain cannot exist, so the engine must unpack it, and the
applier opens the blob before it looks for a decompressor (containerd
``diff/apply.Apply``). "failed to get stream processor" therefore proves the blob is in
the content store; "content digest … not found" proves it is not. Nothing is unpacked
either way. Only blobs whose diff_id some image on the target already has are probed (a
few, each ~0.1 s). A probe that finds its blob is kept until after the load: its image
names the blob, so no garbage collection can take the blob between the probe and the load
(another client deleting the image that held it, say). Deleting the kept probe after the
load then tells whether it held all along; where it was deleted meanwhile, the blob is
probed again, and a blob lost in between triggers a full resend. Two forms
of such a layer are looked for: the compressed blob the memo says shipit made of it, and
the uncompressed one (a ``docker load`` of a ``docker save``, or a cold ship over a slow
link, leaves those); the manifest then names the form that is there.
"""

from __future__ import annotations

import io
import random
import secrets
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from shipit.archive.reader import BlobRecord
from shipit.archive.writer import TarStream, make_image
from shipit.compression import Codec
from shipit.daemon.endpoint import Endpoint
from shipit.daemon.engine import image_inspect, load_stream, remove_repository, throwaway_tag
from shipit.errors import EngineError
from shipit.memo import Memo
from shipit.oci import (
    OCI_LAYER,
    Descriptor,
    chain_ids,
    sha256_digest,
)
from shipit.platforms import Platform
from shipit.target import Capabilities

PROBE_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.shipit-probe"
PROBE_REPO = "shipit-probe.invalid/probe"
_PRESENT = "failed to get stream processor"


@dataclass
class Delta:
    """What one target already has, and so need not be sent."""

    target: str
    skip_diff_ids: frozenset[str] = frozenset()  # classic: chains that exist everywhere used
    candidates: frozenset[str] = frozenset()  # containerd: diff_ids worth a probe
    endpoint: Endpoint | None = None  # containerd: where to probe
    platform: Platform = field(default_factory=Platform.host)  # the probe image's
    probed: dict[str, bool] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)  # blob digest: the probe image kept

    def holds_none(self) -> bool:
        """Nothing the images use is on the target (a cold ship)."""
        return not self.skip_diff_ids and not self.candidates

    def pre_skip(self, digest: str) -> bool:
        """Skip a blob named by its digest before reading it: an uncompressed layer whose
        chain exists (classic), or whose plain blob the content store holds (containerd:
        a cold ship over a slow link leaves plain blobs, and a later one finds them here,
        whatever compression it would give a new layer)."""
        # Only what ``warm`` found: a probe here would hold up the stream, and ``warm``
        # did not look for the plain blob where the memo's compressed one is there.
        return digest in self.skip_diff_ids or self.probed.get(digest) is True

    def wants(self, record: BlobRecord) -> bool:
        """Whether the target needs this blob sent."""
        if record.diff_id is None:
            return True
        if record.diff_id in self.skip_diff_ids:
            return False
        if self.endpoint is not None and record.diff_id in self.candidates:
            return not self.has_blob(record)
        return True

    def has_blob(self, record: BlobRecord) -> bool:
        assert self.endpoint is not None
        if record.digest not in self.probed:
            kept = probe_and_keep(self.endpoint, record, self.platform)
            if kept is not None:
                self.held[record.digest] = kept
            self.probed[record.digest] = kept is not None
        return self.probed[record.digest]

    def warm(self, memo: Memo, codec: Codec) -> None:
        """Probe now for the blobs the memo says the candidate layers compress to (the
        memo is keyed by the source blob, which is the diff_id when the source sends
        layers uncompressed, as the classic store does), and, where that one is not
        there, for the layer's plain blob (see ``pre_skip``)."""
        if self.endpoint is None:
            return
        for diff_id in sorted(self.candidates):
            found = memo.get(diff_id, codec)
            if found is None or not self.has_blob(found.blob(diff_id)):
                self.has_blob(_plain(diff_id))

    def still_has(self, records: Iterable[BlobRecord]) -> bool:
        """After a load: every skipped blob is still in the content store. A blob whose
        kept probe is still there to delete was held all along; any other is probed again
        (one at a time: containerd answers four at once three times slower than one by
        one)."""
        if self.endpoint is None:
            return True
        return all(
            self._held_until_now(r.digest) or probe_blob(self.endpoint, r, self.platform)
            for r in records
            if r.diff_id in self.candidates
        )

    def _held_until_now(self, digest: str) -> bool:
        assert self.endpoint is not None
        name = self.held.pop(digest, None)
        # Not deleted: gone already (a prune, a stale sweep), or no answer: probe again.
        return name is not None and _delete_probe(self.endpoint, name)

    def release(self) -> None:
        """Delete the probes still kept (the load failed, or was never reached)."""
        while self.held and self.endpoint is not None:
            _delete_probe(self.endpoint, self.held.popitem()[1])


def _plain(diff_id: str) -> BlobRecord:
    """The uncompressed blob of a layer, for a probe (which names no size: none is read)."""
    return BlobRecord.plain_layer(diff_id, diff_id, 0)


#: Image lists tried this many times when another client was deleting an image meanwhile.
LIST_TRIES = 5


def _vanishing(exc: Exception) -> bool:
    """The containerd store reads every image's config and sizes it while it lists them;
    an image that another client (say, a concurrent ship's probe) deletes at that moment
    fails the whole list with its content "not found". Nothing is wrong but the timing
    (and a store that really lost content fails every try)."""
    message = str(exc)
    return "not found" in message and (
        "content digest" in message or "failed to calculate size of image" in message
    )


def list_image_ids(endpoint: Endpoint) -> set[str]:
    """The IDs of every image on the engine, dangling and intermediate ones included."""
    for attempt in range(1, LIST_TRIES + 1):
        try:
            return {image["Id"] for image in endpoint.api.images(all=True)}
        except Exception as exc:
            if attempt == LIST_TRIES or not _vanishing(exc):
                raise endpoint.failure("listing images on", exc) from exc
            time.sleep(0.1 * attempt + random.random() * 0.2)
    raise AssertionError("unreachable")


def _target_layers(endpoint: Endpoint) -> list[list[str]]:
    ids = list_image_ids(endpoint)
    layers = []
    for image_id in sorted(ids):
        details = image_inspect(endpoint, image_id)
        if details:
            layers.append(list((details.get("RootFS") or {}).get("Layers") or []))
    return layers


def classic_skips(source: list[list[str]], have: list[list[str]]) -> frozenset[str]:
    """diff_ids whose chain exists on the target at every position ``source`` uses them."""
    have_chains = {c for layers in have for c in chain_ids(layers)}
    needed: set[str] = set()
    used: set[str] = set()
    for layers in source:
        for diff_id, chain in zip(layers, chain_ids(layers), strict=True):
            used.add(diff_id)
            if chain not in have_chains:
                needed.add(diff_id)
    return frozenset(used - needed)


def plan(
    endpoint: Endpoint, caps: Capabilities, source: list[list[str]], platform: Platform
) -> Delta:
    """Ask the target what it holds; decide what the images in ``source`` need not send.

    ``caps.holdings`` says how the engine can tell: by layer chain (a classic store) or by
    blob in its content store (probed, see above)."""
    have = _target_layers(endpoint)
    if caps.holdings == "chains":
        return Delta(endpoint.name, skip_diff_ids=classic_skips(source, have))
    remove_repository(endpoint, PROBE_REPO)  # a run killed mid-probe may have left one
    wanted = {d for layers in source for d in layers}
    present = {d for layers in have for d in layers}
    return Delta(
        endpoint.name,
        candidates=frozenset(wanted & present),
        endpoint=endpoint,
        platform=platform,
    )


# The probe ---------------------------------------------------------------------------


def _dummy_layer(token: str) -> bytes:
    """A tiny first layer of its own for each probe. A dummy shared by every probe would
    leave its snapshot to the garbage collector after each probe, and a probe that finds
    it there and then loses it mid-unpack ("parent snapshot ... does not exist") would
    tell nothing about its blob. A chain no one else has is unpacked under the probe's
    own lease."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = f"shipit content-store probe {token}\n".encode()
        info = tarfile.TarInfo(".shipit-probe")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def probe_archive(record: BlobRecord, name: str, platform: Platform) -> bytes:
    """An archive whose loading proves or disproves that ``record``'s blob is stored (an
    image of the target's own platform, so the engine unpacks it)."""
    assert record.diff_id is not None
    layer = _dummy_layer(name)
    dummy = sha256_digest(layer)
    image = make_image(
        name,
        platform,
        [
            (dummy, Descriptor(OCI_LAYER, dummy, len(layer))),
            (record.diff_id, Descriptor(PROBE_MEDIA_TYPE, record.digest, record.size)),
        ],
    )
    tar = TarStream()
    return b"".join([tar.start(), tar.blob_bytes(dummy, layer), *image.tar_entries(tar)])


def probe_blob(endpoint: Endpoint, record: BlobRecord, platform: Platform) -> bool:
    """True only when the target's content store certainly holds ``record``'s blob."""
    kept = probe_and_keep(endpoint, record, platform)
    if kept is not None:
        _delete_probe(endpoint, kept)
    return kept is not None


def probe_and_keep(endpoint: Endpoint, record: BlobRecord, platform: Platform) -> str | None:
    """Where the content store certainly holds ``record``'s blob: the probe image's name,
    left in place to hold it (None, with nothing left: not held, or not known)."""
    name = f"{PROBE_REPO}:{throwaway_tag(secrets.token_hex(8))}"
    answer = ""  # no error at all: an engine this probe does not understand
    try:
        load_stream(endpoint, [probe_archive(record, name, platform)])
    except EngineError as exc:
        answer = str(exc)
    finally:
        if _PRESENT not in answer:  # "not found", or unknown: send it (never guess)
            _delete_probe(endpoint, name)
    return name if _PRESENT in answer else None


def _delete_probe(endpoint: Endpoint, name: str) -> bool:
    """Best effort; whether the probe image was there and is now deleted."""
    try:
        endpoint.api.remove_image(name, force=True)
    except Exception:
        return False
    return True
