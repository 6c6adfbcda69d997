"""The Docker engine as a target (``/images/load``) and as a source (``/images/get``)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from shipit.closable import Closable
from shipit.compression import Codec, compressed_chunks
from shipit.daemon.delta import Delta, plan
from shipit.daemon.endpoint import Endpoint, resolve_endpoint
from shipit.daemon.engine import (
    EngineInfo,
    image_inspect,
    load_carried,
    load_stream,
    probe,
    remove_repository,
    save_stream,
)
from shipit.daemon.staging import STAGE_REPO, StagedFeed
from shipit.errors import ImageNotFound, NoSpace
from shipit.landing import check_landed, check_retagged, is_image, source_image
from shipit.oci import normalize_ref, split_ref
from shipit.options import Connect
from shipit.pipeline import Result, Subscriber, subscriber_stream
from shipit.progress import Progress
from shipit.target import (
    Capabilities,
    Holdings,
    LandedIds,
    Plan,
    Retags,
    SourceImage,
    TargetFacts,
)

if TYPE_CHECKING:
    from shipit.ssh import SSHSession


class DockerTarget(Closable):
    """A Docker engine, local or over SSH, probed once when opened."""

    def __init__(self, endpoint: Endpoint, info: EngineInfo) -> None:
        self.endpoint = endpoint
        self.info = info
        self._caps = info.capabilities()
        self._wire_bytes = 0
        self._lock = threading.Lock()
        self._delta: Delta | None = None

    @classmethod
    def open(
        cls, address: str | None, connect: Connect, *, session: SSHSession | None = None
    ) -> DockerTarget:
        """``session``: the SSH session to the host ``address`` names, if already open."""
        endpoint = resolve_endpoint(
            address,
            ssh_config=connect.ssh_config,
            accept_new_host_key=connect.accept_new_host_key,
            sudo=connect.sudo,
            session=session,
        )
        try:
            target = cls(endpoint, probe(endpoint))
            target._find_carriers()
            return target
        except BaseException:
            endpoint.close()
            raise

    def _find_carriers(self) -> None:
        """An engine that reads no zstd upload (before 23.0) over SSH can still get one:
        the host's ``zstd -d`` undoes it in front of dial-stdio (zstd sends ~20 % fewer
        bytes than the gzip such an engine reads)."""
        session = self.endpoint.session
        if session is None or "zstd" in self._caps.upload_compressions:
            return
        if session.has_command("zstd"):
            self._caps = replace(self._caps, carried_compressions=frozenset({"zstd"}))

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def facts(self) -> TargetFacts:
        info = self.info
        return TargetFacts(
            info.name, "docker", info.image_store, info.engine_version, info.api_version
        )

    def measure_link(self) -> float | None:
        return self.endpoint.link_speed()

    def about(self) -> dict[str, Any]:
        facts = {**self.info.to_dict(), "platform": str(self._caps.platform)}
        return {**facts, "sudo": True} if self.endpoint.sudo else facts

    def summary(self) -> list[tuple[str, str]]:
        info = self.info
        zstd = "yes" if info.loads_zstd else "no (needs Engine 23.0+ or the containerd store)"
        return [
            ("engine", info.name),
            ("version", f"{info.engine_version} (API {info.api_version})"),
            ("platform", f"{self._caps.platform}, kernel {info.kernel}"),
            ("image store", f"{info.image_store} ({info.storage_driver})"),
            ("zstd layers", zstd),
            *(
                [("upload", "zstd, undone by the host's zstd in front of the engine")]
                if "zstd" in self._caps.carried_compressions
                else []
            ),
            ("manifest.json", "needed" if info.needs_manifest_json else "not needed"),
            *([("access", "through sudo -n")] if self.endpoint.sudo else []),
        ]

    def holdings(self, layers: list[list[str]]) -> Holdings:
        assert self._caps.platform is not None
        self._delta = plan(self.endpoint, self._caps, layers, self._caps.platform)
        return self._delta

    def already_holds(self, images: Sequence[SourceImage], landed: LandedIds) -> Retags | None:
        """Each image under its name, or (for a name to point) under an ID it is known
        by: the source's, or one a checked landing of it had here before."""
        retags: Retags = []
        for image in images:
            if split_ref(image.name)[2]:
                return None  # a name with a digest cannot be pointed by a tag
            ids = landed(image.id)
            if is_image(image_inspect(self.endpoint, image.name), ids, image):
                continue
            held = next(
                (i for i in sorted(ids) if is_image(image_inspect(self.endpoint, i), ids, image)),
                None,
            )
            if held is None:
                return None
            retags.append((held, image.name))
        return retags

    def retag(self, retags: Retags, images: Sequence[SourceImage], landed: LandedIds) -> None:
        for image_id, name in retags:
            repository, tag, _ = split_ref(normalize_ref(name))
            try:
                self.endpoint.api.tag(image_id, repository, tag or "latest")
            except Exception as exc:
                raise self.endpoint.failure(f"tagging {name} on", exc) from exc

        check_retagged(images, landed, self._inspect_names, self.name)

    def prepare(self, plan: Plan) -> None:
        if plan.staged:
            remove_repository(self.endpoint, STAGE_REPO)  # a killed run may have left some
        if plan.store_bytes and self._delta is not None and self._delta.holds_none():
            self._check_space(plan.store_bytes)

    def _check_space(self, need: int) -> None:
        """Refuse a cold ship that plainly cannot fit under the engine's root. (With some
        layers there already, what a ship stores is not known up front: no check.)"""
        free = free_space(self.endpoint, self.info.root_dir)
        if free is not None and free < need:
            raise NoSpace(
                f"{self.name}: {self.info.root_dir} has {free / 1e6:.0f} MB free; the images "
                f"take about {need / 1e6:.0f} MB unpacked (--no-space-check ships anyway)"
            )

    def receive(
        self,
        subscriber: Subscriber,
        result: Result,
        plan: Plan,
        holdings: Holdings,
        progress: Progress | None,
    ) -> list[str]:
        """One load (or, staged, a series of loads) from ``subscriber``. With ``plan.wire``
        the upload is compressed as a whole and ``result.bytes_out`` counts what went out;
        ``result.bytes_before_wire`` keeps the plain tar's size."""
        self._wire_bytes = 0
        load = partial(self._load, plan.wire, None)
        order = list(plan.stage_order) if plan.staged else []
        try:
            if order:
                assert self._caps.platform is not None
                staged = StagedFeed(
                    self.endpoint,
                    self._caps.platform,
                    subscriber,
                    result,
                    order,
                    load=load,
                    send_blob=holdings.wants,
                    layout=plan.layout,
                    progress=progress,
                    end_frames=plan.wire is not None and plan.wire.name == "zstd",
                )
                loaded = staged.run()
            else:
                stream = subscriber_stream(
                    subscriber,
                    result,
                    progress=progress,
                    send_blob=holdings.wants,
                    layout=plan.layout,
                )
                try:
                    steps = _layer_steps(progress, self.name, result)
                    body = _then_announce(stream, progress, self.name)
                    loaded = self._load(plan.wire, steps, body)
                finally:
                    stream.close()
        finally:
            subscriber.leave()
        if plan.wire is not None:  # what went out was compressed as a whole
            result.bytes_before_wire, result.bytes_out = result.bytes_out, self._wire_bytes
        return loaded

    def _load(
        self, wire: Codec | None, on_layer: Callable[[int], None] | None, chunks: Iterable[bytes]
    ) -> list[str]:
        if wire is not None and wire.name not in self._caps.upload_compressions:
            return load_carried(self.endpoint, chunks, wire, self._counted, on_layer)
        if wire is None:
            return load_stream(self.endpoint, chunks, on_layer=on_layer)
        with contextlib.closing(compressed_chunks(chunks, wire, self._counted)) as packed:
            return load_stream(self.endpoint, packed, on_layer=on_layer)

    def _counted(self, n: int) -> None:
        with self._lock:  # stage uploads compress in their own threads
            self._wire_bytes += n

    def verify(self, result: Result) -> None:
        """Every name must now be the image sent: the same diff_ids for the platform the
        engine runs, and the same ID (the config's digest, or what was sent on top)."""
        assert result.output is not None
        check_landed(result.output, self._caps, self._inspect_names, self.name)

    def _inspect_names(self, names: tuple[str, ...]) -> dict[str, Any]:
        return {name: image_inspect(self.endpoint, name) for name in names}

    def close(self) -> None:
        if self._delta is not None:
            self._delta.release()  # probes kept to hold blobs for a load that never came
        self.endpoint.close()

    def __repr__(self) -> str:
        return f"DockerTarget({self.name!r})"


def free_space(endpoint: Endpoint, path: str) -> int | None:
    """Bytes free under ``path`` on the engine's machine: ``df`` over SSH, statvfs for a
    local socket; None when that cannot be told (no df, no such path, TCP)."""
    if not path:
        return None
    if endpoint.session is not None:
        from shipit.remote import RemoteHost

        done = RemoteHost(endpoint.name, endpoint.session).run(["df", "-Pk", path], timeout=30)
        try:
            return int(done.text.splitlines()[-1].split()[3]) * 1024 if done.ok else None
        except (IndexError, ValueError):
            return None
    if endpoint.link_speed() == float("inf"):  # a unix socket: the engine is here
        try:
            stat = os.statvfs(path)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize
    return None


def _layer_steps(
    progress: Progress | None, name: str, result: Result
) -> Callable[[int], None] | None:
    """A progress step for each layer the engine registers (of those this load sent)."""
    if progress is None:
        return None

    def step(k: int) -> None:
        of = len(result.sent)
        progress.stage(f"{name}: the engine is registering layer {k}" + (f"/{of}" if of else ""))

    return step


def _then_announce(
    chunks: Iterable[bytes], progress: Progress | None, name: str
) -> Iterator[bytes]:
    """``chunks``, then a progress step: the engine now registers what it got."""
    yield from chunks
    if progress is not None:
        progress.stage(f"{name}: the engine is registering the image")


class DockerSource(Closable):
    """A Docker engine to save images from."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._info: EngineInfo | None = None

    def keeps_indexes(self) -> bool:
        """Whether an image here may be an index over more platforms than it shows."""
        if self._info is None:
            self._info = probe(self.endpoint)
        return self._info.capabilities().indexes

    @classmethod
    def open(
        cls, address: str | None, connect: Connect, *, session: SSHSession | None = None
    ) -> DockerSource:
        return cls(
            resolve_endpoint(
                address,
                ssh_config=connect.ssh_config,
                accept_new_host_key=connect.accept_new_host_key,
                sudo=connect.sudo,
                session=session,
            )
        )

    @property
    def name(self) -> str:
        return self.endpoint.name

    def images(self, names: list[str]) -> list[SourceImage]:
        """One ``image inspect`` per name. The platform is the one it shows (on a
        containerd store an index may hold more, which only its save tells)."""
        return [source_image(name, self._inspect(name)) for name in names]

    def _inspect(self, name: str) -> dict[str, Any]:
        details = image_inspect(self.endpoint, name)
        if details is None:
            raise ImageNotFound(f"{self.endpoint.name}: no such image: {name}")
        return details

    def save(self, names: list[str]) -> Iterator[bytes]:
        return save_stream(self.endpoint, names)

    def close(self) -> None:
        self.endpoint.close()


__all__ = ["Delta", "DockerSource", "DockerTarget"]
