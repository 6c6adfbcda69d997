"""Shaping policy: what each target gets, decided from its capabilities and the link.

Everything here asks a target's ``Capabilities`` (shipit.target); nothing asks what kind
of target it is.
"""

from __future__ import annotations

from shipit.compression import Codec
from shipit.errors import Unsupported, UsageError
from shipit.options import ShipOptions
from shipit.platforms import Platform
from shipit.target import Capabilities, Plan
from shipit.transform import Layout

#: Links at least this fast (bytes/s) carry uncompressed layers to a store that unpacks
#: them faster than compressed ones: the engine decompresses on one core while it
#: registers a layer. Engine 20.10 gunzips at ~100 MB/s, so from ~500 Mbit/s on gzip costs
#: more than it saves; zstd decompresses fast enough that only a target on this machine
#: skips it.
UNCOMPRESSED_LINK = {"gzip": 60e6, "zstd": float("inf")}
#: Below this (bytes/s, ~160 Mbit/s) the link, not the CPU, bounds a transfer, so for a
#: store that unpacks layers the spare CPU goes into a stronger setting: zstd 6 sends 7 %
#: fewer bytes than zstd 3 and still compresses at ~200 MB/s on two cores (long-distance
#: matching would save 12 %, but engines then decompress 40 % slower: measured on Engine 26).
SLOW_LINK = 20e6


def choose_codec(
    caps: Capabilities, requested: Codec | None, link: float | None, *, alone: bool = True
) -> Codec:
    """The layer compression for a target, or Unsupported before a byte is sent.

    ``link`` is the measured bytes/s to it (``inf``: on this machine; None: unknown).
    ``alone`` is False when the same ship feeds other targets: this machine's cores then
    serve all of them, so the link-driven choices that cost CPU are off: plain layers over
    SSH (encryption of 3× the bytes; fan-out to three on loopback measured 1.45× one target
    with gzip 1 into Engine 20.10, 1.62× with none) and the stronger levels on slow links.
    """
    if requested is not None:
        if not caps.readable(requested.name):
            raise Unsupported(
                f"{caps.describe} cannot load {requested.name} layers; "
                "use --compression gzip or none"
            )
        return requested
    packed = "zstd" if caps.readable("zstd") else "gzip"
    local = link == float("inf")  # a socket on this machine: nothing to encrypt
    fast = link is not None and link >= UNCOMPRESSED_LINK[packed] and (alone or local)
    if fast and not caps.keeps_blobs:
        return Codec("none")  # compressing would only cost time, ours and the target's
    # A store that keeps blobs as sent is found again by digest, so it always gets the
    # same bytes (zstd 3) whatever the link: a stronger level on one run would make every
    # layer of the next redeploy look new.
    # Only for a lone target: in a fan-out every distinct codec is one more compression
    # (CPU and ~50 MB of zstd workers), which a level bump for one target would cost.
    slow = alone and link is not None and link < SLOW_LINK and not caps.keeps_blobs
    if packed == "zstd":
        return Codec("zstd", 6) if slow else Codec("zstd")
    return Codec("gzip", 3) if slow else Codec("gzip")


def choose_wire(
    caps: Capabilities,
    requested: Codec | None,
    layers: Codec,
    wire: Codec | None = None,
    *,
    alone: bool = True,
    link: float | None = None,
    cold: bool = False,
) -> tuple[Codec, Codec | None]:
    """The layer compression and the compression of the whole upload for a target.

    A store that unpacks layers keeps no compressed blob: it decompresses every layer as it
    loads it, and it may take a whole upload compressed. When shipit picks for a lone such
    target (``requested`` and ``wire`` None) and ``layers`` would be compressed, the layers
    go plain inside an upload compressed with ``layers``'s setting: as many bytes on the
    wire, but each layer streams as it is read instead of waiting in a spool until its
    compressed size is known for its tar header (5 s of idle link for the 700 MB first
    layer of the benchmark image at 100 Mbit/s). In a fan-out the layers stay compressed:
    one compression then serves every target of a codec. A store that keeps blobs as sent
    is not chosen for this (compressed, they take under a third of its disk, and a later
    ship finds them by the memo) unless the ship is ``cold`` and the ``link`` is the bound:
    then a compressed layer's spool would leave the link idle (3.5 s of a 28 s ship of a
    700 MB one-layer image at 100 Mbit/s), and the store keeps plain blobs, the disk a
    ``docker load`` of a ``docker save`` takes. A later ship finds them by digest.

    ``wire`` forces the upload's compression (``none``: off); the layers inside then go
    plain on either kind of store unless ``requested`` names their compression. On a
    store that keeps blobs that trades the plain blobs' disk for a cold ship that does not
    wait for the first layer's compressed size (3.6 s of 74 for the benchmark image at
    100 Mbit/s).
    """
    if wire is not None:
        if wire.name == "none":
            return layers, None
        if wire.name not in caps.upload_compressions | caps.carried_compressions:
            raise Unsupported(f"{caps.describe} cannot load a {wire.name} upload")
        return (Codec("none") if requested is None else layers), wire
    if requested is not None or not alone or layers.name == "none":
        return layers, None
    if not caps.keeps_blobs and layers.name == "gzip" and "zstd" in caps.carried_compressions:
        # It reads gzip only, but the host's zstd can undo a zstd upload: ~20 % fewer bytes,
        # at the level the link called for (the stronger one when the link is the bound).
        link_bound = layers == _stronger(layers)
        return Codec("none"), _stronger(Codec("zstd")) if link_bound else Codec("zstd")
    if layers.name not in caps.upload_compressions:
        return layers, None
    if not caps.keeps_blobs:
        return Codec("none"), layers
    if cold and link is not None and link < SLOW_LINK:
        return Codec("none"), _stronger(layers)
    return layers, None


def _stronger(layers: Codec) -> Codec:
    """The level for a link that bounds the ship (see SLOW_LINK)."""
    return Codec("zstd", 6) if layers.name == "zstd" else Codec("gzip", 3)


def layout_for(caps: Capabilities, platforms: tuple[Platform, ...]) -> Layout:
    """The platforms and top-level files a target gets: ``platforms`` when asked for,
    else the one the target runs (every platform present for an archive)."""
    wanted = platforms or ((caps.platform,) if caps.platform is not None else None)
    if wanted is not None and len(wanted) > 1 and not caps.indexes:
        raise UsageError(
            f"{caps.describe} keeps one platform per image; "
            f"--platform names {len(wanted)}: {', '.join(map(str, wanted))}"
        )
    default = wanted[0] if wanted else (caps.platform or Platform.host())
    return Layout(
        wanted,
        caps.indexes,
        caps.manifest_json,
        default,
        full_repo_tags=caps.full_repo_tags,
        one_index_entry=caps.one_index_entry,
    )


def plan(
    caps: Capabilities,
    options: ShipOptions,
    link: float | None,
    *,
    alone: bool,
    cold: bool = False,
) -> Plan:
    """Everything decided for one target before a byte is sent (``cold``: the target
    holds none of the images' layers)."""
    layers, wire = choose_wire(
        caps,
        options.codec,
        choose_codec(caps, options.codec, link, alone=alone),
        options.wire,
        alone=alone,
        link=link,
        cold=cold,
    )
    staged = options.staged
    if staged is None:
        staged = link is not None and link < SLOW_LINK
    return Plan(
        codec=layers,
        wire=wire,
        staged=staged and caps.stages,
        layout=layout_for(caps, options.platforms),
        link=link,
    )


def explain(caps: Capabilities, options: ShipOptions, chosen: Plan) -> list[str]:
    """The plan's choices in words, for ``-v``: what each target got and why."""
    link = chosen.link
    rate = (
        "unknown"
        if link is None
        else "this machine"
        if link == float("inf")
        else f"{link / 1e6:.0f} MB/s"
    )
    codec = str(chosen.codec) if chosen.codec is not None else "as archived"
    if options.codec is not None:
        why = "asked for"
    elif chosen.codec is not None and chosen.codec.name == "none" and chosen.wire is None:
        why = f"the target unpacks layers and the link ({rate}) is faster than compressing"
    elif chosen.wire is not None and options.wire is None and caps.keeps_blobs:
        why = (
            f"a cold ship and the link ({rate}) is the bound: plain inside a compressed "
            "upload, no layer waits for its compressed size; the store keeps them plain "
            "(~3x the disk of zstd blobs, as docker load of a docker save)"
        )
    elif chosen.wire is not None and options.wire is None:
        why = "plain inside a compressed upload: no layer waits for its compressed size"
        if chosen.wire.name not in caps.upload_compressions:
            why += f"; the host's {chosen.wire.name} undoes it in front of the engine"
    elif caps.keeps_blobs:
        why = "the target keeps blobs as sent: the same bytes every time, found again later"
    elif link is not None and link < SLOW_LINK:
        why = f"the link ({rate}) is the bound: a stronger level"
    else:
        why = f"what the target reads (link {rate})"
    out = [f"layers: {codec} ({why})"]
    if chosen.wire is not None:
        out.append(f"upload: {chosen.wire}" + (" (asked for)" if options.wire else ""))
    if chosen.staged:
        asked = options.staged is not None
        out.append("staged loads" + (" (asked for)" if asked else f": the link is {rate}"))
    if chosen.layout.platforms:
        asked = bool(options.platforms)
        names = ", ".join(map(str, chosen.layout.platforms))
        out.append(f"platform: {names}" + (" (asked for)" if asked else " (what the target runs)"))
    return out
