"""Podman over SSH as a target (``podman load`` reading the archive on stdin) and as a
source (``podman save`` writing it on stdout). The host needs only sshd and ``podman``;
rootful (as root, or a ``podman`` on the user's PATH that runs ``sudo -n podman``) and
rootless (the user's own storage) are the same to shipit.

What Podman 4.3 reads (measured on Debian 12, see docs/architecture.md):

- ``podman load`` tries an OCI archive first, and Podman 4 reads one only when its
  ``index.json`` names a single image once; else it reads ``manifest.json`` (a
  docker-archive). So an image goes with one index entry (its first name; the other
  names follow by ``podman tag``), and ``manifest.json`` carries full references: Podman
  names a familiar ``rosie:latest`` from it ``localhost/rosie:latest``.
- Layers: uncompressed, gzip and zstd; a whole upload compressed with zstd (not gzip:
  its docker-archive reader then stops with "unexpected EOF").
- The delta: the docker-archive reader refuses an archive whose ``manifest.json`` names
  a layer file it lacks ("Some layer tarfiles are missing in the tarball"). The OCI
  reader does not open a layer blob that storage already has under the blob's digest, so
  a layer can be left out when the archive holds one image and the layer goes
  uncompressed (its digest is its diff_id, which storage knows for every layer it has).
- Image ID = the config digest (without ``sha256:``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from shipit.addresses import parse_user_host_port
from shipit.archive.reader import BlobRecord
from shipit.closable import Closable
from shipit.compression import Codec, compressed_chunks
from shipit.errors import (
    EngineError,
    ImageNotFound,
    ShipitError,
    Unsupported,
    UsageError,
)
from shipit.landing import check_landed, check_retagged, image_id, is_image, source_image
from shipit.memo import Memo
from shipit.oci import familiar_ref, normalize_ref, split_ref
from shipit.options import Connect
from shipit.pipeline import Result, Subscriber, subscriber_stream
from shipit.platforms import Platform
from shipit.podman.address import SCHEME
from shipit.progress import Progress
from shipit.remote import Completed, RemoteHost
from shipit.target import (
    Capabilities,
    Holdings,
    LandedIds,
    Plan,
    Retags,
    SourceImage,
    TargetFacts,
)

#: One shell line that says which engine CLIs a host has (a line each), after a marker
#: (a key whose authorized_keys forces ``docker system dial-stdio`` prints no marker).
_MARK = "shipit-engines:"
_WHICH = (
    f"echo {_MARK}; command -v docker >/dev/null 2>&1 && echo docker; "
    "command -v podman >/dev/null 2>&1 && echo podman; true"
)
_NO_COMMAND = 127


@dataclass(frozen=True)
class PodmanInfo:
    """What ``podman info`` says about a host."""

    name: str
    version: str
    api_version: str
    rootless: bool
    storage_driver: str
    graph_root: str
    platform: Platform
    kernel: str

    @property
    def major(self) -> int:
        head = self.version.split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    @property
    def loads_zstd(self) -> bool:
        # Measured on 4.3 (Debian 12); containers/image reads zstd layers since long before.
        return self.major >= 4

    @property
    def mode(self) -> str:
        return "rootless" if self.rootless else "rootful"

    def capabilities(self) -> Capabilities:
        compressions = {"none", "gzip"} | ({"zstd"} if self.loads_zstd else set())
        return Capabilities(
            compressions=frozenset(compressions),
            upload_compressions=frozenset({"zstd"} if self.loads_zstd else set()),
            keeps_blobs=False,  # storage unpacks every layer and drops the blob
            manifest_json=True,
            indexes=False,  # a docker-archive load: one platform per image
            platform=self.platform,
            stages=False,
            holdings="chains",
            identity="config",
            describe=f"{self.name} (Podman {self.version}, {self.mode}, {self.storage_driver})",
            full_repo_tags=True,
            one_index_entry=True,
            retags=True,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "podman",
            "version": self.version,
            "api_version": self.api_version,
            "rootless": self.rootless,
            "storage_driver": self.storage_driver,
            "graph_root": self.graph_root,
            "kernel": self.kernel,
            "loads_zstd": self.loads_zstd,
            "platform": str(self.platform),
        }


def parse_podman_address(address: str) -> tuple[str | None, str, int | None]:
    """``podman://[user@]host[:port]`` → (user, host, port)."""
    rest = address.removeprefix(SCHEME).rstrip("/")
    if not rest or "/" in rest:
        raise UsageError(f"{address}: expected podman://[user@]host[:port]")
    return parse_user_host_port(rest)


class PodmanHost:
    """The ``podman`` CLI of one host, over one SSH session."""

    def __init__(self, remote: RemoteHost) -> None:
        self.remote = remote
        self.name = remote.name

    @classmethod
    def open(cls, address: str, connect: Connect) -> PodmanHost:
        user, host, port = parse_podman_address(address)
        return cls(RemoteHost.open(host, connect, user=user, port=port, name=address))

    @classmethod
    def detect(cls, remote: RemoteHost) -> PodmanHost | None:
        """The host's Podman if it has ``podman`` and no ``docker`` (one command on
        ``remote``, which it then keeps); None otherwise. A host with neither:
        Unsupported."""
        done = remote.run_shell(_WHICH, timeout=30)
        words = done.text.split()
        if not done.ok or _MARK not in words:
            return None  # not a shell there: leave it to the Docker engine
        has = set(words[words.index(_MARK) + 1 :])
        if "podman" in has and "docker" not in has:
            return cls(remote)
        if not has:
            raise Unsupported(f"{remote.name}: neither docker nor podman on the host")
        return None

    def podman(
        self, args: list[str], *, doing: str, stdin: Iterable[bytes] = (), timeout: float = 600
    ) -> Completed:
        """Run ``podman ARGS``; a failure raises the error it means (``doing`` says what
        was being done, for the message)."""
        done = self.remote.run(["podman", *args], stdin=stdin, timeout=timeout)
        if not done.ok:
            raise failure(done, f"{doing} {self.name}")
        return done

    def info(self) -> PodmanInfo:
        done = self.podman(["info", "--format", "json"], doing="asking", timeout=60)
        try:
            value = json.loads(done.stdout)
            host, store, version = value["host"], value["store"], value["version"]
            return PodmanInfo(
                name=self.name,
                version=str(version.get("Version") or ""),
                api_version=str(version.get("APIVersion") or ""),
                rootless=bool((host.get("security") or {}).get("rootless")),
                storage_driver=str(store.get("graphDriverName") or ""),
                graph_root=str(store.get("graphRoot") or ""),
                platform=Platform.of(
                    str(host.get("os") or "linux"),
                    str(host.get("arch") or ""),
                    host.get("variant") or None,
                ),
                kernel=str(host.get("kernel") or ""),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EngineError(f"{self.name}: `podman info` said something unreadable") from exc

    def inspect(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """``podman image inspect`` of each name that exists (by name as asked): one
        command for all (each costs ~0.4 s of ssh, sudo and podman starting), one per
        name only if some name is missing."""
        out: dict[str, dict[str, Any]] = {}
        if len(names) > 1:
            done = self.remote.run(["podman", "image", "inspect", "--format", "json", *names])
            if done.ok:
                try:
                    found = json.loads(done.stdout)
                except ValueError as exc:
                    raise EngineError(f"{self.name}: `podman image inspect` unreadable") from exc
                if isinstance(found, list) and len(found) == len(names):
                    return dict(zip(names, found, strict=True))
        for name in names:
            done = self.remote.run(["podman", "image", "inspect", "--format", "json", name])
            if not done.ok:
                if b"image not known" in done.stderr or b"no such image" in done.stderr:
                    continue
                raise failure(done, f"inspecting images on {self.name}")
            try:
                found = json.loads(done.stdout)
            except ValueError as exc:
                raise EngineError(f"{self.name}: `podman image inspect` unreadable") from exc
            if found:
                out[name] = found[0]
        return out

    def all_layers(self) -> set[str]:
        """The diff_ids of every image in its storage."""
        script = (
            'ids=$(podman images -qa --no-trunc) || exit; [ -z "$ids" ] || '
            "podman image inspect --format '{{json .RootFS.Layers}}' $ids"
        )
        done = self.remote.run_shell(script)
        if not done.ok:
            raise failure(done, f"listing images on {self.name}")
        present: set[str] = set()
        for line in done.text.splitlines():
            line = line.strip()
            if line and line != "null":
                present.update(json.loads(line))
        return present

    def close(self) -> None:
        self.remote.close()


def failure(done: Completed, doing: str) -> ShipitError:
    """One line for what a podman command said, as the error it means."""
    err = done.stderr.decode(errors="replace")
    if done.status == _NO_COMMAND or re.search(r"podman: (command )?not found", err):
        return Unsupported(f"{doing}: no podman on the host")
    for line in err.splitlines():
        low = line.lower()
        if "no space left on device" in low:
            return EngineError(f"{doing}: no space left on device")
        if "permission denied" in low or "operation not permitted" in low:
            return EngineError(f"{doing}: storage permission denied: {_clean(line)}")
        if "a password is required" in low:
            return EngineError(f"{doing}: sudo wants a password for podman ({_clean(line)})")
    return EngineError(f"{doing}: {_reason(err) or done.why()}")


def _reason(err: str) -> str:
    """The line of a multi-line ``podman load`` refusal that says what was wrong: the
    docker-archive reader's (shipit's archives are read by it unless the index names one
    image), else the first."""
    lines = [_clean(x) for x in err.splitlines() if x.strip()]
    if not lines:
        return ""
    readers = [x for x in lines if x.startswith("* ")]
    if readers:
        oci = next((x for x in readers if x.startswith("* oci-archive:")), "")
        docker = next((x for x in readers if x.startswith("* docker-archive:")), "")
        pick = oci if oci and "more than one image" not in oci else docker or readers[0]
        return f"load rejected: {pick[2:]}"
    return lines[-1]


def _clean(line: str) -> str:
    return line.strip().removeprefix("Error: ").strip()


class PodmanHoldings:
    """The layers an image need not carry: diff_ids Podman's storage has, when the archive
    will hold one image (the OCI reader then resolves a left-out uncompressed layer)."""

    def __init__(self, skip: frozenset[str]) -> None:
        self.skip = skip

    def pre_skip(self, digest: str) -> bool:
        return digest in self.skip

    def holds_none(self) -> bool:
        return not self.skip

    def wants(self, record: BlobRecord) -> bool:
        # Only a blob named by its diff_id (uncompressed) resolves from storage.
        return record.digest not in self.skip

    def warm(self, memo: Memo, codec: Codec) -> None:
        pass

    def still_has(self, records: Iterable[BlobRecord]) -> bool:
        return True  # a layer gone meanwhile fails the load itself (then it goes whole)


class PodmanTarget(Closable):
    """Podman on a host over SSH, asked ``podman info`` once when opened."""

    def __init__(self, host: PodmanHost, info: PodmanInfo) -> None:
        self.host = host
        self.info = info
        self._caps = info.capabilities()
        self._wire_bytes = 0
        self._lock = threading.Lock()

    @classmethod
    def open(cls, address: str, connect: Connect) -> PodmanTarget:
        return cls.on(PodmanHost.open(address, connect))

    @classmethod
    def on(cls, host: PodmanHost) -> PodmanTarget:
        try:
            return cls(host, host.info())
        except BaseException:
            host.close()
            raise

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def facts(self) -> TargetFacts:
        info = self.info
        return TargetFacts(
            info.name,
            "podman",
            f"{info.mode} {info.storage_driver}",
            info.version,
            info.api_version,
        )

    def measure_link(self) -> float | None:
        return self.host.remote.measure_link()

    def about(self) -> dict[str, Any]:
        return self.info.to_dict()

    def summary(self) -> list[tuple[str, str]]:
        info = self.info
        return [
            ("engine", f"{info.name} (Podman)"),
            ("version", f"Podman {info.version} (API {info.api_version})"),
            ("platform", f"{info.platform}, kernel {info.kernel}"),
            ("mode", info.mode),
            ("storage", f"{info.storage_driver} in {info.graph_root}"),
            ("zstd layers", "yes" if info.loads_zstd else "no (needs Podman 4+)"),
        ]

    def _named(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Inspect details of each full name that is a tag here (Podman resolves a short
        name to ``localhost/…`` too: those are not the name asked for)."""
        found = self.host.inspect(names)
        return {n: d for n, d in found.items() if d and n in (d.get("RepoTags") or [])}

    def already_holds(self, images: Sequence[SourceImage], landed: LandedIds) -> Retags | None:
        if any(split_ref(image.name)[2] for image in images):
            return None  # a name with a digest cannot be pointed by a tag
        named = self._named([normalize_ref(image.name) for image in images])
        retags: Retags = []
        for image in images:
            ids = landed(image.id)
            if is_image(named.get(normalize_ref(image.name)), ids, image):
                continue
            by_id = self.host.inspect([i.removeprefix("sha256:") for i in sorted(ids)])
            held = next((d for d in by_id.values() if is_image(d, ids, image)), None)
            if held is None:
                return None
            retags.append((image_id(held), normalize_ref(image.name)))
        return retags

    def retag(self, retags: Retags, images: Sequence[SourceImage], landed: LandedIds) -> None:
        for held, name in retags:
            done = self.host.remote.run(["podman", "tag", held.removeprefix("sha256:"), name])
            if not done.ok:
                raise failure(done, f"tagging {familiar_ref(name)} on {self.name}")

        def inspect(names: tuple[str, ...]) -> dict[str, Any]:
            named = self._named([normalize_ref(n) for n in names])
            return {n: named.get(normalize_ref(n)) for n in names}

        check_retagged(images, landed, inspect, self.name)

    def holdings(self, layers: list[list[str]]) -> Holdings:
        if len({tuple(x) for x in layers}) != 1:
            return PodmanHoldings(frozenset())  # several images: a docker-archive, whole
        present = self.host.all_layers()
        return PodmanHoldings(frozenset(set(layers[0]) & present))

    def prepare(self, plan: Plan) -> None:
        pass  # podman load commits an image only once all of it is stored

    def receive(
        self,
        subscriber: Subscriber,
        result: Result,
        plan: Plan,
        holdings: Holdings,
        progress: Progress | None,
    ) -> list[str]:
        """One ``podman load`` of the archive on stdin, then ``podman tag`` for the names
        after an image's first."""
        self._wire_bytes = 0
        try:
            stream = subscriber_stream(
                subscriber,
                result,
                progress=progress,
                send_blob=holdings.wants,
                layout=plan.layout,
            )
            packed = None
            try:
                chunks: Iterable[bytes] = stream
                if plan.wire is not None:
                    chunks = packed = compressed_chunks(stream, plan.wire, self._counted)
                done = self.host.podman(["load"], stdin=chunks, doing="loading into")
            finally:
                if packed is not None:
                    packed.close()  # its thread lets go of the stream first
                stream.close()
        finally:
            subscriber.leave()
        if plan.wire is not None:
            result.bytes_before_wire, result.bytes_out = result.bytes_out, self._wire_bytes
        loaded = [
            line.split(":", 1)[1].strip()
            for line in done.text.splitlines()
            if line.startswith("Loaded image")
        ]
        if result.output is not None:
            for landed in result.output.images:
                if len(landed.names) > 1:
                    self.host.podman(
                        ["tag", landed.names[0], *landed.names[1:]], doing="tagging on"
                    )
        return loaded

    def _counted(self, n: int) -> None:
        with self._lock:
            self._wire_bytes += n

    def verify(self, result: Result) -> None:
        """Every name is now the image sent: its ID (the config digest), its diff_ids
        for the platform the host runs, under the name given (not ``localhost/…``)."""
        assert result.output is not None

        def inspect(names: tuple[str, ...]) -> dict[str, Any]:
            return self._named(list(names))  # one podman command for them all

        check_landed(result.output, self._caps, inspect, self.name)

    def close(self) -> None:
        self.host.close()

    def __repr__(self) -> str:
        return f"PodmanTarget({self.name!r})"


class PodmanSource(Closable):
    """Podman on a host over SSH to save images from (``podman save`` of a
    docker-archive, streamed)."""

    def __init__(self, host: PodmanHost) -> None:
        self.host = host

    @classmethod
    def open(cls, address: str, connect: Connect) -> PodmanSource:
        return cls(PodmanHost.open(address, connect))

    @property
    def name(self) -> str:
        return self.host.name

    def keeps_indexes(self) -> bool:
        return False  # podman save writes one manifest per image

    def _details(self, names: list[str]) -> dict[str, dict[str, Any]]:
        found = self.host.inspect(names)
        for name in names:
            if name not in found:
                raise ImageNotFound(f"{self.name}: no such image: {familiar_ref(name)}")
        return found

    def images(self, names: list[str]) -> list[SourceImage]:
        found = self._details(names)
        return [source_image(n, found[n]) for n in names]

    def save(self, names: list[str]) -> Iterator[bytes]:
        argv = ["podman", "save", "--format", "docker-archive"]
        if len(names) > 1:
            argv.append("--multi-image-archive")
        return self.host.remote.stream(
            [*argv, *names], failed=lambda done: failure(done, f"saving from {self.name}")
        )

    def close(self) -> None:
        self.host.close()


__all__ = [
    "PodmanHost",
    "PodmanInfo",
    "PodmanSource",
    "PodmanTarget",
    "failure",
]
