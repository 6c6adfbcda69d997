"""Source to target(s): every command is one read of a source feeding one or more targets.

``ship`` and ``ship_many`` save from an engine; ``load`` and ``convert`` read an archive;
``save`` and ``convert`` write one. The source is read once; each distinct layer
compression is produced once (one producer per codec, fed by a tee); each target is fed
by its own thread, with its own plan (shipit.policy) and its own delta, and returns its
own outcome. Nothing here knows what kind of target it feeds: it asks ``Capabilities``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial

from shipit.addresses import open_source, open_target
from shipit.archive.reader import CountingReader
from shipit.archive.target import ArchiveTarget
from shipit.compression import Codec, Readable
from shipit.errors import EngineError, PlatformMissing, ShipitError, UsageError, VerificationFailed
from shipit.inputs import checked_names, open_input
from shipit.landing import expected_id
from shipit.landings import Landings
from shipit.memo import Compressed, Memo
from shipit.oci import familiar_ref, normalize_ref
from shipit.options import ShipOptions
from shipit.pipeline import IterReader, Producer, Result, Subscriber, Tee
from shipit.policy import explain, layout_for, plan
from shipit.progress import Event, Progress
from shipit.report import Report, TargetResult, report_of
from shipit.target import Holdings, HoldsNothing, Plan, Retags, Source, SourceImage, Target
from shipit.transform import LayerPolicy


@dataclass(frozen=True)
class _Feed:
    """One target on one attempt: what it is, how it is fed, what it holds."""

    target: Target
    plan: Plan
    holdings: Holdings


@dataclass
class _Outcome:
    """What one target's worker returns: its result, or the error that stopped it."""

    result: Result = field(default_factory=Result)
    loaded: list[str] = field(default_factory=list)
    error: ShipitError | None = None
    first_byte_at: float | None = None  # the source's first byte (time.monotonic())
    loaded_at: float | None = None  # the target answered the last load
    checked_from: float | None = None  # its check began (in a fan-out, once all have loaded)
    verified_at: float | None = None


# Engine to engine(s) -------------------------------------------------------------------


def ship(
    images: list[str],
    to: str,
    *,
    source: str | None = None,
    options: ShipOptions = ShipOptions(),  # noqa: B008 - frozen
    progress: Progress | None = None,
) -> Report:
    """Stream images from one engine into another, recompressed for the target, sending
    only the layers it lacks, and check that what landed has the source's config and
    diff_ids. Raises the target's error if it failed."""
    (outcome,) = ship_many(images, [to], source=source, options=options, progress=progress)
    if outcome.error is not None:
        raise outcome.error
    assert outcome.report is not None
    return outcome.report


def ship_many(
    images: list[str],
    targets: list[str],
    *,
    source: str | None = None,
    options: ShipOptions = ShipOptions(),  # noqa: B008 - frozen
    progress: Progress | None = None,
) -> list[TargetResult]:
    """Ship to several targets from one read of the source: each distinct layer
    compression is produced once, targets are fed concurrently, each with its own delta.
    A target that fails does not stop the others; its error is in its result."""
    started = time.monotonic()
    names = checked_names(images)
    if not targets:
        raise UsageError("name at least one --to target")
    outcomes = {name: TargetResult(name) for name in targets}
    with ExitStack() as stack:
        origin = stack.enter_context(open_source(source, options.connect))
        wanted = origin.images(names)  # ImageNotFound before any target is touched
        layers = [list(image.diff_ids) for image in wanted]
        size = sum({image.id: image.size for image in wanted}.values()) or None
        landings = Landings.default()
        save: _SaveAhead | None = None
        if not _may_be_there(wanted, landings, options):
            # The source takes seconds before its first byte (a classic store exports
            # every layer first): ask for the save now, while the targets connect.
            save = _SaveAhead(origin, names)
            stack.callback(save.close)
        if progress is not None:
            progress.total = size
            progress.stage(f"connecting to {', '.join(dict.fromkeys(targets))}")
        opened: dict[str, Target] = {}
        for name in dict.fromkeys(targets):
            try:
                opened[name] = stack.enter_context(open_target(name, options.connect))
            except ShipitError as exc:
                outcomes[name].error = exc
        for name in _already_there(opened, wanted, landings, options, outcomes, started):
            del opened[name]  # it holds every image: tagged, checked, nothing to send
        if not opened:
            return [outcomes[name] for name in targets]
        if save is None:  # ask the targets what they hold while the source prepares
            save = _SaveAhead(origin, names)
            stack.callback(save.close)
        if progress is not None:
            progress.stage(f"asking {', '.join(opened)} what is there already")
        memo = Memo.default()
        feeds: list[_Feed] = []
        alone = len(opened) == 1
        for name, target in opened.items():
            try:
                need = size if options.space_check else None
                feeds.append(_open_feed(target, options, layers, alone, need))
            except ShipitError as exc:
                outcomes[name].error = exc
        feeds = _platforms_checked(feeds, origin, wanted, outcomes)
        for feed in feeds:
            if feed.plan.codec is not None:
                feed.holdings.warm(memo, feed.plan.codec)
        connected = time.monotonic()
        attempts = {feed.target.name: 0 for feed in feeds}
        pending = feeds
        if progress is not None and pending:
            progress.stage(f"waiting for the source engine ({origin.name}) to prepare the save")
        while pending:
            stream = _open_save(save.take, origin, names)
            step = "shipping" if len(pending) == 1 else f"shipping to {len(pending)} targets"
            got = _transfer(
                stream, pending, progress, memo, trust_layers=options.trust_layers, step=step
            )
            retry = []
            for feed in pending:
                attempts[feed.target.name] += 1
                outcome = got[feed.target.name]
                _settle(feed, outcome, options.verify)
                report_to = outcomes[feed.target.name]
                report_to.report = None
                report_to.error = outcome.error and _which_attempt(
                    outcome.error, attempts[feed.target.name], feed.holdings.holds_none()
                )
                if outcome.error is None:
                    _remember(landings, wanted, feed, outcome)
                    report_to.report = _report(feed, outcome, attempts[feed.target.name], options)
                    report_to.report.phases = _phases(started, connected, outcome)
                    report_to.report.seconds = time.monotonic() - started
                elif _raced(outcome) and attempts[feed.target.name] < RACE_TRIES:
                    retry.append(feed)  # the engine raced with itself or another load: again
                elif _worth_retrying(outcome):
                    # It lost a layer between the check and the load: once more, whole.
                    plain = replace(feed.plan, staged=False)
                    retry.append(_Feed(feed.target, plain, HoldsNothing()))
            if any(_raced(got[f.target.name]) for f in retry):
                time.sleep(random.uniform(0.5, 2.0))  # apart from the other load, not in step
            pending = retry
    return [outcomes[name] for name in targets]


def _may_be_there(wanted: list[SourceImage], landings: Landings, options: ShipOptions) -> bool:
    """Whether a target may hold every image already, so the save waits for the targets'
    answer: each image landed from here before. (An image never shipped from here is
    seldom on a target by its own ID; when it is, the save asked for is dropped unread.)"""
    if options.full or options.platforms:
        return False  # shipped whatever the targets hold
    return all(landings.landed_before(image.id) for image in wanted)


def _already_there(
    opened: dict[str, Target],
    wanted: list[SourceImage],
    landings: Landings,
    options: ShipOptions,
    outcomes: dict[str, TargetResult],
    started: float,
) -> list[str]:
    """The targets that hold every image exactly: names pointed and checked there, and
    their reports written, before any save is asked for. (Not with ``--full``, nor with
    ``--platform``, which may ask for more than the target holds.)"""
    if options.full or options.platforms:
        return []
    done = []
    for name, target in opened.items():
        if not target.capabilities.retags:
            continue
        try:
            retags = target.already_holds(wanted, landings.ids)
            if retags is None:
                continue
            if retags:
                target.retag(retags, wanted, landings.ids)
        except ShipitError as exc:
            outcomes[name].error = exc
            done.append(name)
            continue
        outcomes[name].report = _report_held(target, wanted, retags, started)
        for image in wanted:  # the next ship waits for the targets' answer too
            landings.remember(image.id, image.id)
        done.append(name)
    return done


def _report_held(
    target: Target, wanted: list[SourceImage], retags: Retags, started: float
) -> Report:
    seconds = time.monotonic() - started
    layers = len({d for image in wanted for d in image.diff_ids})
    notes = [f"tagged {', '.join(familiar_ref(n) for _, n in retags)} there"] if retags else []
    return Report(
        images=[familiar_ref(image.name) for image in wanted],
        layers=layers,
        layers_skipped=layers,
        seconds=seconds,
        compression="none",
        target=target.facts,
        notes=notes,
        phases={"connect_and_check": round(seconds, 3)},
        already_there=True,
        decisions=[
            "the target holds each image (same ID and diff_ids): no save, no load",
            *_access(target),
        ],
    )


def _remember(
    landings: Landings, wanted: list[SourceImage], feed: _Feed, outcome: _Outcome
) -> None:
    """Note, for a checked landing, the ID each image has on the target now."""
    output = outcome.result.output
    if output is None or outcome.error is not None:
        return
    by_name = {normalize_ref(image.name): image.id for image in wanted}
    for landed in output.images:
        target_id = expected_id(landed, feed.target.capabilities)
        for name in landed.names:
            source_id = by_name.get(normalize_ref(name))
            if target_id is not None and source_id is not None:
                landings.remember(source_id, target_id)


def _open_feed(
    target: Target,
    options: ShipOptions,
    layers: list[list[str]],
    alone: bool,
    size: int | None,
) -> _Feed:
    measure = options.codec is None or options.staged is None
    link = target.measure_link() if measure else None
    holdings = HoldsNothing() if options.full else target.holdings(layers)
    chosen = plan(target.capabilities, options, link, alone=alone, cold=holdings.holds_none())
    chosen = replace(chosen, store_bytes=size)
    if chosen.staged and layers:
        chosen = replace(chosen, stage_order=tuple(layers[0]))
    target.prepare(chosen)
    return _Feed(target, chosen, holdings)


def _platforms_checked(
    feeds: list[_Feed],
    origin: Source,
    wanted: list[SourceImage],
    outcomes: dict[str, TargetResult],
) -> list[_Feed]:
    """Refuse, before a byte is sent, a target whose platform an image plainly lacks: an
    image the source shows as one platform that is not the one wanted. (An index on a
    containerd store may hold more than it shows; its save then decides.)"""
    if origin.keeps_indexes():
        return feeds  # an index may hold more platforms than the engine shows
    shown = {image.name: image.platform for image in wanted}
    kept = []
    for feed in feeds:
        asked = feed.plan.layout.platforms or ()
        problem = None
        for name, has in shown.items():
            if not has.known:
                continue
            for platform in asked:
                if not platform.matches(has):
                    problem = PlatformMissing(
                        f"{familiar_ref(name)} is {has}, not {platform} "
                        f"({feed.target.capabilities.describe} runs "
                        f"{feed.target.capabilities.platform}; --platform {has} ships it anyway)"
                    )
        if problem is None:
            kept.append(feed)
        else:
            outcomes[feed.target.name].error = problem
    return kept


def _open_save(
    take: Callable[[], Iterator[bytes] | None], origin: Source, names: list[str]
) -> Callable[[], Readable]:
    """The source stream of one attempt: the save already under way, if still unused."""
    return lambda: IterReader(take() or origin.save(names))


#: Loads that lost a race inside the engine (see ``_raced``) are tried this many times in all.
RACE_TRIES = 4


def _raced(outcome: _Outcome) -> bool:
    """The load lost a race inside the engine: nothing is wrong but the timing, and the
    same load once more will do.

    - Docker's containerd store names each upload's ingests by their path in the archive,
      so two ships at once collide on ``index.json`` ("locked for ... unavailable").
    - A load that moves a tag leaves the snapshots only the old image held to the garbage
      collector, which may take one just as the unpack of the new image builds on it
      ("parent snapshot ... does not exist"; a plain ``docker load`` meets it too). The
      image is registered by then and holds its blobs, so the next unpack makes the
      snapshots again from them."""
    if not isinstance(outcome.error, EngineError):
        return False
    message = str(outcome.error)
    locked = "locked for" in message and "unavailable" in message
    return locked or ("parent snapshot" in message and "does not exist" in message)


def _worth_retrying(outcome: _Outcome) -> bool:
    """A load that named blobs it skipped and then failed: one of them may have gone
    between the check and the load (another ship's image removed, the content store's
    garbage collected). Worth one attempt that sends every layer, however many times a
    raced load was tried before; that attempt skips nothing, so it is never retried so."""
    if not outcome.result.skipped:
        return False
    return isinstance(outcome.error, EngineError | VerificationFailed)


def _which_attempt(error: ShipitError, attempts: int, whole: bool) -> ShipitError:
    """The error of a target tried more than once says which attempt it is."""
    if attempts == 1:
        return error
    how = ", every layer sent" if whole else ""
    return error.context(f"attempt {attempts}{how}")


def _settle(feed: _Feed, outcome: _Outcome, verify: bool) -> None:
    """After the load: skipped blobs still there (a content store), then what landed."""
    if outcome.error is not None:
        return
    outcome.checked_from = time.monotonic()
    try:
        if not feed.holdings.still_has(outcome.result.skipped):
            raise VerificationFailed(
                f"after loading into {feed.target.name}: a skipped layer has gone missing"
            )
        if verify:
            feed.target.verify(outcome.result)
    except ShipitError as exc:
        outcome.error = exc
    outcome.verified_at = time.monotonic()


def _phases(started: float, connected: float, outcome: _Outcome) -> dict[str, float]:
    """Where one target's time went, in seconds (the save is asked for while connecting,
    so the source's preparation and the connection overlap). A fan-out checks each target
    once every one has loaded: the time between is ``waiting_for_other_targets``."""
    first = outcome.first_byte_at or connected
    last = outcome.result.last_byte_at or outcome.loaded_at or first
    loaded = outcome.loaded_at or last
    checked = max(outcome.checked_from or loaded, loaded)
    verified = outcome.verified_at or checked
    return {
        "connect": round(connected - started, 3),
        "source_preparing": round(first - started, 3),
        "transfer": round(max(0.0, last - first), 3),
        "target_registering_stages": round(outcome.result.stage_wait, 3),
        "target_after_last_byte": round(max(0.0, loaded - last), 3),
        "waiting_for_other_targets": round(checked - loaded, 3),
        "verification": round(max(0.0, verified - checked), 3),
    }


def _report(feed: _Feed, outcome: _Outcome, attempts: int, options: ShipOptions) -> Report:
    result = outcome.result
    codec = feed.plan.codec
    report = report_of(result, str(codec) if codec is not None else "as archived")
    if feed.plan.wire is not None:
        report.wire_compression = str(feed.plan.wire)
        report.bytes_before_wire = result.bytes_before_wire
    report.target, report.loaded = feed.target.facts, outcome.loaded
    report.attempts = attempts
    report.link = feed.plan.link
    if feed.plan.layout.platforms:
        report.platforms = [str(p) for p in feed.plan.layout.platforms]
    report.decisions = explain(feed.target.capabilities, options, feed.plan)
    if result.skipped or result.sent:
        held = len(result.skipped)
        report.decisions.append(
            f"delta: {held} of {held + len(result.sent)} layers already on the target"
            + ("" if attempts == 1 else f" (attempt {attempts}: every layer sent)")
        )
    report.decisions += _access(feed.target)
    return report


def _access(target: Target) -> list[str]:
    """What ``-v`` says about how the engine was reached."""
    return ["reached the engine through sudo -n"] if target.about().get("sudo") else []


# One read of a source, fed to every target ----------------------------------------------


def _transfer(
    open_stream: Callable[[], Readable],
    feeds: list[_Feed],
    progress: Progress | None,
    memo: Memo | None,
    *,
    trust_layers: bool = False,
    step: str | None = None,
) -> dict[str, _Outcome]:
    """One read of the source; one producer per distinct codec; one thread per target,
    each returning its own outcome.

    Unless ``trust_layers``, a layer passed on without recompressing is decompressed and
    hashed too, before it is sent: a corrupt or inflating layer fails here in seconds
    instead of in the target, which would spend minutes on it before refusing it."""
    emit = progress.emit if progress else (lambda event: None)
    outcomes = {feed.target.name: _Outcome() for feed in feeds}
    groups: dict[str, list[_Feed]] = {}
    for feed in feeds:
        groups.setdefault(str(feed.plan.codec), []).append(feed)
    first_byte: list[float] = []

    def read(n: int) -> None:
        if not first_byte:
            first_byte.append(time.monotonic())
            for outcome in outcomes.values():
                outcome.first_byte_at = first_byte[0]
            if progress is not None and step is not None:
                progress.stage(step)  # the source's first byte: the wait is over
        emit(Event("read", n))

    try:
        counting = CountingReader(open_stream(), read)
    except ShipitError as exc:
        for outcome in outcomes.values():
            outcome.error = exc
        return outcomes
    # Even for one producer: the tee's thread reads the socket while the producer hashes
    # and compresses (both let go of the GIL), which is what a redeploy's speed is.
    tee = Tee(counting, len(groups))
    producers: list[Producer] = []
    workers: list[threading.Thread] = []
    for n, members in enumerate(groups.values()):
        subscribers = [Subscriber(f.target.name) for f in members]
        readable = frozenset.intersection(*(f.target.capabilities.compressions for f in members))
        codec = members[0].plan.codec
        policy = LayerPolicy(
            codec,
            full=not trust_layers,
            readable=readable,
            skip=_skip_for(members),
            known=_known_for(members, memo, codec),
            memo=memo,
        )
        producers.append(Producer(tee.reader(n), policy, subscribers, on_done=partial(tee.drop, n)))
        for feed, subscriber in zip(members, subscribers, strict=True):
            outcome = outcomes[feed.target.name]
            workers.append(
                threading.Thread(
                    target=_feed,
                    args=(feed, subscriber, outcome, progress),
                    name=f"shipit-{feed.target.name}",
                    daemon=True,
                )
            )
    for thread in [*producers, *workers]:
        thread.start()
    try:
        for worker in workers:
            while worker.is_alive():
                worker.join(0.2)  # short joins keep Ctrl-C responsive
    finally:
        for producer in producers:
            producer.stop()
    for outcome in outcomes.values():
        outcome.result.bytes_in = counting.count
    return outcomes


def _feed(
    feed: _Feed, subscriber: Subscriber, outcome: _Outcome, progress: Progress | None
) -> None:
    """A target's worker: fills in only its own outcome."""
    try:
        outcome.loaded = feed.target.receive(
            subscriber, outcome.result, feed.plan, feed.holdings, progress
        )
        outcome.loaded_at = time.monotonic()
    except ShipitError as exc:
        outcome.error = exc
    except Exception as exc:  # a bug must not take the other targets down
        outcome.error = ShipitError(f"shipping to {feed.target.name}: {exc}")
    finally:
        subscriber.leave()


def _skip_for(group: list[_Feed]) -> Callable[[str], bool]:
    """A blob is left unread only when no target of the group needs it."""
    return lambda digest: all(f.holdings.pre_skip(digest) for f in group)


def _known_for(
    group: list[_Feed], memo: Memo | None, codec: Codec | None
) -> Callable[[str], Compressed | None]:
    """A blob is left uncompressed when the memo names its compressed form and every
    target of the group holds that (containerd: a probe per candidate layer)."""
    if memo is None or codec is None:
        return lambda digest: None

    def known(digest: str) -> Compressed | None:
        found = memo.get(digest, codec)
        if found is None:
            return None
        return None if any(f.holdings.wants(found.blob(digest)) for f in group) else found

    return known


class _SaveAhead:
    """The source's save, requested in the background; ``take`` hands it over once."""

    def __init__(self, origin: Source, names: list[str]) -> None:
        self._chunks: Iterator[bytes] | None = None
        self._error: ShipitError | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._request, args=(origin, names), name="shipit-save", daemon=True
        )
        self._thread.start()

    def _request(self, origin: Source, names: list[str]) -> None:
        try:
            chunks = origin.save(names)
        except ShipitError as exc:
            self._error = exc
            return
        with self._lock:
            self._chunks = chunks
            late = self._closed
        if late:
            self.close()

    def take(self) -> Iterator[bytes] | None:
        """The save's chunks (raising its error), or None once taken or closed."""
        while self._thread.is_alive():
            self._thread.join(0.2)  # short joins keep Ctrl-C responsive
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            if self._error is not None:
                raise self._error
            chunks, self._chunks = self._chunks, None  # the taker owns it now
            return chunks

    def close(self) -> None:
        """Drop the save if nobody took it (now, or when its answer comes)."""
        with self._lock:
            self._closed = True
            chunks, self._chunks = self._chunks, None
        if isinstance(chunks, Generator):
            chunks.close()


# Archives --------------------------------------------------------------------------


def load(
    path: str,
    *,
    target: str | None = None,
    options: ShipOptions = ShipOptions(),  # noqa: B008 - frozen
    progress: Progress | None = None,
) -> Report:
    """Load an archive into a target, shaped for it: layers it cannot read are
    recompressed (zstd → gzip for Engine < 23), the layout and platform it needs written."""
    from shipit.policy import choose_codec

    with ExitStack() as stack:
        src = stack.enter_context(open_input(path))
        into = stack.enter_context(open_target(target, options.connect))
        caps = into.capabilities
        if options.codec is not None:
            choose_codec(caps, options.codec, link=None)
        chosen = Plan(
            codec=options.codec,  # None: as archived
            wire=None,
            staged=False,
            layout=layout_for(caps, options.platforms),
            link=None,
        )
        feed = _Feed(into, chosen, HoldsNothing())
        outcome = _transfer(lambda: src, [feed], progress, None, trust_layers=options.trust_layers)[
            into.name
        ]
        _settle(feed, outcome, options.verify)
        if outcome.error is not None:
            raise outcome.error
        return _report(feed, outcome, 1, options)


def save(
    images: list[str],
    output: str,
    codec: Codec,
    *,
    source: str | None = None,
    options: ShipOptions = ShipOptions(),  # noqa: B008 - frozen
    progress: Progress | None = None,
) -> Report:
    """Save images (all their tags, shared layers once) from an engine into an archive."""
    names = checked_names(images)
    with open_source(source, options.connect) as origin:
        return _write_archive(
            lambda: IterReader(origin.save(names)), output, codec, options, progress
        )


def convert(
    source: str,
    output: str,
    codec: Codec,
    *,
    options: ShipOptions = ShipOptions(),  # noqa: B008 - frozen
    progress: Progress | None = None,
) -> Report:
    """Rewrite an archive (a file or ``-``) with ``codec`` layers into ``output``."""
    with open_input(source) as src:
        return _write_archive(lambda: src, output, codec, options, progress)


def _write_archive(
    open_stream: Callable[[], Readable],
    output: str,
    codec: Codec,
    options: ShipOptions,
    progress: Progress | None,
) -> Report:
    archive = ArchiveTarget(output)
    layout = layout_for(archive.capabilities, options.platforms)
    feed = _Feed(archive, Plan(codec, None, False, layout, None), HoldsNothing())
    outcome = _transfer(open_stream, [feed], progress, None, trust_layers=options.trust_layers)[
        archive.name
    ]
    if outcome.error is not None:
        raise outcome.error
    report = _report(feed, outcome, 1, options)
    report.output = output
    report.link = None
    return report


__all__ = ["TargetResult", "convert", "load", "save", "ship", "ship_many"]
