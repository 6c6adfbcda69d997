"""A containerd without Docker as a target: a Kubernetes node, a k3s server, a nerdctl
host, reached over SSH and driven by its ``ctr`` (or ``k3s ctr``).

**Probe.** One command on the host finds the CLI (``k3s ctr`` before ``ctr``), the socket
(``?address=``, else ``$CONTAINERD_ADDRESS``, else the usual paths), whether the user can
open it or must go through ``sudo -n``, and asks containerd its version, namespaces and
snapshotters.

**Import.** The archive is an OCI layout of the platforms wanted (the node's unless
``--platform`` says otherwise), shaped so that every manifest the index names is in it
(an index naming absent platforms is cut down to what is present: the case where ``ctr
images import`` by hand fails with ``content digest … not found``). It streams into
``ctr images import --local=false --platform P --snapshotter S -``: the transfer service
(containerd 1.7 and 2.x) imports under a lease, unpacks the layers for the node's
snapshotter and only then creates the images, so a failed import names no image and
leaves no blob behind (the lease ends, the garbage collector takes them). Every index entry
carries ``io.containerd.image.name`` with the full reference (``docker.io/library/app:v2``),
which is the name the kubelet looks up.

**Delta.** ``ctr content ls -q`` lists the blobs of the namespace's content store; the
archive leaves out the layers found there (the memo names a layer's compressed form without
compressing it). After the import every image is checked (``ctr images check``: the
digest sent, all content present, unpacked), so a blob that went missing in between fails
the ship, which is then retried once with everything.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipit.archive.reader import BlobRecord
from shipit.closable import Closable
from shipit.compression import Codec
from shipit.containerd.address import (
    DEFAULT_NAMESPACE,
    DEFAULT_SNAPSHOTTER,
    DEFAULT_SOCKET,
    K3S_SOCKET,
    NodeAddress,
    parse_node_address,
)
from shipit.errors import (
    ConnectionFailed,
    EngineError,
    PermissionDenied,
    ShipitError,
    Unsupported,
    UsageError,
    VerificationFailed,
)
from shipit.memo import Memo
from shipit.oci import familiar_ref, short
from shipit.options import Connect
from shipit.pipeline import Result, Subscriber, subscriber_stream
from shipit.platforms import Platform
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

#: containerd reads zstd layers from 1.5 on (``images.MediaTypeDockerSchema2LayerZstd``
#: and the OCI zstd layer type in ``diff/apply``).
ZSTD_FROM = (1, 5)
#: The transfer service, which imports, unpacks and only then names images, is in 1.7+.
TRANSFER_FROM = (1, 7)
#: The transfer service unpacks an all-platform import (for the node's platform) from 2.0.
ALL_PLATFORMS_TRANSFER_FROM = (2, 0)
#: An import waits this long (seconds) for containerd after the last byte was sent.
IMPORT_TIMEOUT = 3600

#: One round trip: which CLIs the host has, the socket, direct or sudo, and containerd's
#: version, namespaces and snapshotters. Plain POSIX sh with builtins, ``uname`` and ``id``.
PROBE = r"""
for c in docker ctr k3s nerdctl; do
  p=$(command -v "$c" 2>/dev/null) && echo "has $c $p"
done
echo "arch $(uname -m 2>/dev/null)"
echo "user $(id -un 2>/dev/null)"
k3s=$(command -v k3s 2>/dev/null) || k3s=
ctr=$(command -v ctr 2>/dev/null) || ctr=
want=$1
if [ "$want" = docker ] && command -v docker >/dev/null 2>&1; then exit 0; fi
addr=$2
if [ -n "$k3s" ]; then
  set -- "$k3s" ctr
elif [ -n "$ctr" ]; then
  set -- "$ctr"
  if [ -z "$addr" ]; then
    addr=${CONTAINERD_ADDRESS:-}
    if [ -z "$addr" ]; then
      for s in @SOCKETS@; do
        if [ -S "$s" ]; then addr=$s; break; fi
      done
    fi
    [ -n "$addr" ] || addr=@DEFAULT@
  fi
else
  echo "noctr"
  exit 0
fi
[ -n "$addr" ] && set -- "$@" --address "$addr"
echo "address $addr"
echo "== version"
via=direct
if ! "$@" version 2>&1; then
  echo "== sudo"
  if sudo -n "$@" version 2>&1; then via=sudo; else via=none; fi
fi
echo "== via $via"
for c in "$@"; do echo "cmd $c"; done
[ "$via" = none ] && exit 0
run() { if [ "$via" = sudo ]; then sudo -n "$@"; else "$@"; fi; }
echo "== namespaces"
run "$@" namespaces ls -q 2>&1
echo "== plugins"
run "$@" plugins ls 2>&1
echo "== end"
""".replace("@SOCKETS@", f"{DEFAULT_SOCKET} {K3S_SOCKET}").replace("@DEFAULT@", DEFAULT_SOCKET)


@dataclass(frozen=True)
class NodeFacts:
    """What the probe found on a host."""

    has: dict[str, str]  # CLI name → path
    arch: str = ""
    user: str = ""
    socket: str = ""
    command: tuple[str, ...] = ()  # the ctr to run, with its --address
    via: str = ""  # "direct", "sudo", "none" ("": no ctr)
    client_version: str = ""
    server_version: str = ""
    access_error: str = ""  # what ctr said when neither direct nor sudo worked
    namespaces: tuple[str, ...] = ()
    snapshotters: dict[str, str] = field(default_factory=dict)  # name → ok/skip/error

    @property
    def docker(self) -> bool:
        return "docker" in self.has

    @property
    def platform(self) -> Platform:
        return Platform.of("linux", self.arch or "")


def probe_script(want: str, socket: str | None) -> str:
    """The command line that runs PROBE; ``want`` "docker" stops early on a Docker host."""
    args = ["/bin/sh", "-c", PROBE, "shipit-probe", want, socket or ""]
    return " ".join(shlex.quote(a) for a in args)


def parse_probe(text: str) -> NodeFacts:
    """Read what PROBE printed."""
    has: dict[str, str] = {}
    values: dict[str, str] = {}
    command: list[str] = []
    sections: dict[str, list[str]] = {}
    current = ""
    via = ""
    for line in text.splitlines():
        if line.startswith("== "):
            current = line[3:].strip()
            if current.startswith("via "):
                via, current = current[4:], ""
            sections.setdefault(current, [])
            continue
        if current:
            sections[current].append(line)
            continue
        key, _, value = line.partition(" ")
        if key == "has":
            name, _, path = value.partition(" ")
            has[name] = path
        elif key == "cmd":
            command.append(value)
        elif key == "noctr":
            via = ""
        else:
            values[key] = value
    version_lines = sections.get("sudo") if "sudo" in sections else sections.get("version", [])
    client, server = _versions(version_lines or [])
    error = ""
    if via == "none":
        error = _last_error(sections.get("version", []))
        if not server:
            client, server = _versions(sections.get("version", []))
    snapshotters = {}
    for line in sections.get("plugins", []):
        cols = line.split()
        if len(cols) >= 4 and cols[0] == "io.containerd.snapshotter.v1":
            snapshotters[cols[1]] = cols[-1]
    return NodeFacts(
        has=has,
        arch=values.get("arch", ""),
        user=values.get("user", ""),
        socket=values.get("address", ""),
        command=tuple(command),
        via=via,
        client_version=client,
        server_version=server,
        access_error=error,
        namespaces=tuple(n.strip() for n in sections.get("namespaces", []) if n.strip()),
        snapshotters=snapshotters,
    )


def _versions(lines: list[str]) -> tuple[str, str]:
    """(client, server) from ``ctr version``."""
    client = server = ""
    part = ""
    for line in lines:
        if line.startswith("Client:"):
            part = "client"
        elif line.startswith("Server:"):
            part = "server"
        elif line.strip().startswith("Version:"):
            value = line.split(":", 1)[1].strip()
            if part == "client":
                client = value
            elif part == "server":
                server = value
    return client, server


def _last_error(lines: list[str]) -> str:
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("ctr:") or "error" in line.lower() or "denied" in line:
            return line.removeprefix("ctr: ").strip()
    return lines[-1].strip() if lines else ""


def version_tuple(version: str) -> tuple[int, int]:
    """``1.7.24~ds1`` → (1, 7); unknown → (0, 0)."""
    found = re.match(r"v?(\d+)\.(\d+)", version)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def capabilities_for(facts: NodeFacts, name: str, snapshotter: str) -> Capabilities:
    """What a containerd of this version takes."""
    version = version_tuple(facts.server_version)
    compressions = {"none", "gzip"}
    if version >= ZSTD_FROM:
        compressions.add("zstd")
    return Capabilities(
        compressions=frozenset(compressions),
        upload_compressions=frozenset(),  # ctr import reads a plain tar
        keeps_blobs=True,
        manifest_json=False,
        indexes=True,
        platform=facts.platform,
        stages=False,
        holdings="content",
        identity="manifest",
        describe=f"{name} (containerd {facts.server_version}, {snapshotter})",
    )


# Errors ----------------------------------------------------------------------------


def import_error(name: str, completed: Completed) -> ShipitError:
    """One line for a failed ``ctr images import``."""
    why = completed.why().removeprefix("ctr: ")
    low = why.lower()
    if "no space left" in low:
        return EngineError(f"importing into {name}: the node's disk is full ({why})")
    if "permission denied" in low:
        return PermissionDenied(f"importing into {name}: {why}")
    if "no unpack platforms" in low:
        return EngineError(
            f"importing into {name}: containerd rejected the image: its transfer service "
            "unpacks for no such snapshotter and platform (its unpack_config names the "
            f"snapshotters it unpacks for; see `ctr plugins ls`): {why}"
        )
    return EngineError(f"importing into {name}: containerd rejected the image: {why}")


def access_error(name: str, facts: NodeFacts) -> ShipitError:
    why = facts.access_error or "ctr failed"
    low = why.lower()
    who = facts.user or "the ssh user"
    if "permission denied" in low:
        return PermissionDenied(
            f"{name}: {who} cannot open the containerd socket {facts.socket} (permission "
            f"denied) and may not run `sudo -n {facts.command[0] if facts.command else 'ctr'}`"
            "; add the user to the socket's group or allow ctr in sudoers"
        )
    if "no such file" in low or "connection refused" in low or "dial" in low:
        return ConnectionFailed(
            f"{name}: containerd is not listening on {facts.socket or 'its socket'} ({why}); "
            "name the socket with ?address=PATH"
        )
    return ConnectionFailed(f"{name}: ctr cannot reach containerd: {why}")


# The target ------------------------------------------------------------------------


class ContainerdTarget(Closable):
    """A containerd namespace on a host, over SSH, probed once when opened."""

    def __init__(
        self,
        host: RemoteHost,
        facts: NodeFacts,
        *,
        name: str,
        namespace: str = DEFAULT_NAMESPACE,
        snapshotter: str = DEFAULT_SNAPSHOTTER,
    ) -> None:
        self.host = host
        self.node = facts
        self._name = name
        self.namespace = namespace
        self.snapshotter = snapshotter
        self._caps = capabilities_for(facts, name, snapshotter)

    @classmethod
    def open(cls, address: str, connect: Connect) -> ContainerdTarget:
        """``ctr://[user@]host[:port][?namespace=&address=&snapshotter=]``."""
        node = parse_node_address(address)
        host = RemoteHost.open(node.host, connect, user=node.user, port=node.port, name=address)
        try:
            facts = probe(host, "containerd", node.socket)
            return cls.checked(host, facts, node)
        except BaseException:
            host.close()
            raise

    @classmethod
    def checked(cls, host: RemoteHost, facts: NodeFacts, node: NodeAddress) -> ContainerdTarget:
        """The target, or one line on what is wrong with the host (nothing is closed)."""
        name = node.name
        if facts.via == "":
            raise Unsupported(
                f"{name}: no ctr, k3s or docker on the PATH of {facts.user or 'the ssh user'}"
                + (" (nerdctl is there: shipit drives ctr)" if "nerdctl" in facts.has else "")
            )
        if facts.via == "none":
            raise access_error(name, facts)
        if version_tuple(facts.server_version) < TRANSFER_FROM:
            raise Unsupported(
                f"{name}: containerd {facts.server_version or '(unknown)'} is too old; "
                "shipit imports through the transfer service of containerd 1.7 and later"
            )
        if node.namespace not in facts.namespaces:
            known = ", ".join(facts.namespaces) or "none"
            raise UsageError(
                f"{name}: containerd has no namespace {node.namespace!r} (it has: {known}); "
                "name one with ?namespace="
            )
        state = facts.snapshotters.get(node.snapshotter)
        if facts.snapshotters and state != "ok":
            usable = ", ".join(s for s, ok in facts.snapshotters.items() if ok == "ok")
            raise UsageError(
                f"{name}: snapshotter {node.snapshotter!r} is "
                f"{'not loaded' if state is None else state} on containerd (usable: {usable}); "
                "name one with ?snapshotter="
            )
        return cls(host, facts, name=name, namespace=node.namespace, snapshotter=node.snapshotter)

    # what it is ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def facts(self) -> TargetFacts:
        return TargetFacts(self._name, "containerd", "containerd", self.node.server_version)

    def measure_link(self) -> float | None:
        return self.host.measure_link()

    def about(self) -> dict[str, Any]:
        node = self.node
        return {
            "name": self._name,
            "kind": "containerd",
            "containerd_version": node.server_version,
            "ctr_version": node.client_version,
            "ctr": " ".join(node.command),
            "socket": node.socket,
            "namespace": self.namespace,
            "snapshotter": self.snapshotter,
            "platform": str(self._caps.platform),
            "loads_zstd": self._caps.readable("zstd"),
            "sudo": node.via == "sudo",
        }

    def summary(self) -> list[tuple[str, str]]:
        node = self.node
        zstd = "yes" if self._caps.readable("zstd") else "no (needs containerd 1.5+)"
        access = f"sudo -n as {node.user}" if node.via == "sudo" else f"direct, as {node.user}"
        return [
            ("node", self._name),
            ("containerd", f"{node.server_version} (ctr {node.client_version})"),
            ("ctr", " ".join(node.command)),
            ("socket", f"{node.socket or 'the one k3s ctr knows'} ({access})"),
            ("namespace", self.namespace),
            ("snapshotter", self.snapshotter),
            ("platform", str(self._caps.platform)),
            ("zstd layers", zstd),
        ]

    # ctr ----------------------------------------------------------------------------

    def ctr(self, *args: str) -> list[str]:
        """The argv of one ctr command in the target's namespace."""
        sudo = ["sudo", "-n"] if self.node.via == "sudo" else []
        return [*sudo, *self.node.command, "--namespace", self.namespace, *args]

    def run(self, *args: str, what: str) -> Completed:
        done = self.host.run(self.ctr(*args))
        if not done.ok:
            raise EngineError(f"{what} on {self._name}: {done.why().removeprefix('ctr: ')}")
        return done

    def content(self) -> frozenset[str]:
        """The digests of every blob in the namespace's content store."""
        done = self.run("content", "ls", "--quiet", what="listing content")
        return frozenset(d for d in done.text.split() if d.startswith("sha256:"))

    # a ship -------------------------------------------------------------------------

    def already_holds(self, images: Sequence[SourceImage], landed: LandedIds) -> Retags | None:
        # capabilities.retags is False, not yet: every ship to a node is an import (whose
        # delta sends no layer the node holds)
        return None

    def retag(self, retags: Retags, images: Sequence[SourceImage], landed: LandedIds) -> None:
        raise NotImplementedError("capabilities.retags is False")

    def holdings(self, layers: list[list[str]]) -> Holdings:
        return ContentHoldings(self, self.content())

    def prepare(self, plan: Plan) -> None:
        pass  # an import that died left only leased content, which containerd collects

    def receive(
        self,
        subscriber: Subscriber,
        result: Result,
        plan: Plan,
        holdings: Holdings,
        progress: Progress | None,
    ) -> list[str]:
        """One ``ctr images import`` fed the archive as it is produced."""
        argv = self.ctr("images", "import", *self.import_flags(plan), "-")
        try:
            stream = subscriber_stream(
                subscriber, result, progress=progress, send_blob=holdings.wants, layout=plan.layout
            )
            try:
                done = self.host.run(argv, stdin=stream, timeout=IMPORT_TIMEOUT)
            finally:
                stream.close()
        finally:
            subscriber.leave()
        if result.output is None and done.ok:
            raise EngineError(f"importing into {self._name}: the archive ended early")
        if not done.ok:
            raise import_error(self._name, done)
        saved = []
        for line in done.text.splitlines():
            cols = line.split()
            if len(cols) >= 2 and cols[1] == "saved" and cols[0] not in saved:
                saved.append(cols[0])
        return [f"Imported: {ref}" for ref in saved]

    def import_flags(self, plan: Plan) -> list[str]:
        """Through the transfer service, for the one platform sent; several platforms
        sent (every one present): all of them, the node's unpacked. containerd 1.7's
        transfer service cannot unpack an all-platform import ("no unpack platforms
        defined"), so there ctr imports it itself and then unpacks."""
        wanted = plan.layout.platforms or ()
        snapshotter = ["--snapshotter", self.snapshotter]
        if len(wanted) == 1:
            return ["--local=false", "--platform", str(wanted[0]), *snapshotter]
        if version_tuple(self.node.server_version) >= ALL_PLATFORMS_TRANSFER_FROM:
            return ["--local=false", "--all-platforms", *snapshotter]
        return ["--local", "--all-platforms", *snapshotter]

    def verify(self, result: Result) -> None:
        """Every name is the index or manifest sent, its content is all there, and it is
        unpacked for the snapshotter (for the node's own platform)."""
        assert result.output is not None
        names = {n: landed.root.digest for landed in result.output.images for n in landed.names}
        if not names:
            return
        done = self.run(
            "images",
            "check",
            "--snapshotter",
            self.snapshotter,
            *(f"name=={n}" for n in names),
            what="checking images",
        )
        rows = {}
        for line in done.text.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 5:
                rows[cols[0]] = cols
        runs_here = self._runs_here(result)
        problems = []
        for name, digest in names.items():
            row = rows.get(name)
            if row is None:
                problems.append(f"{familiar_ref(name)} is missing")
                continue
            if row[2] != digest:
                got = short(row[2])
                problems.append(f"{familiar_ref(name)} is {got}, expected {short(digest)}")
            status = row[3]
            if status != "complete":
                problems.append(f"{familiar_ref(name)} is {status} {row[4]}")
            if runs_here and row[-1] != "true":
                problems.append(f"{familiar_ref(name)} is not unpacked for {self.snapshotter}")
        if problems:
            raise VerificationFailed(f"after importing into {self._name}: " + "; ".join(problems))

    def _runs_here(self, result: Result) -> bool:
        wanted = result.output.images if result.output else []
        platform = self._caps.platform
        if platform is None:
            return False
        for landed in wanted:
            found = False
            for manifest in landed.manifests:
                has = Platform.from_json(manifest.config.value)
                if has is None or has.matches(platform):
                    found = True
            if not found:
                return False
        return True

    def close(self) -> None:
        self.host.close()

    def __repr__(self) -> str:
        return f"ContainerdTarget({self._name!r})"


class ContentHoldings:
    """The blobs a namespace's content store holds: layers found there are not sent."""

    def __init__(self, target: ContainerdTarget | None, digests: frozenset[str]) -> None:
        self.target = target
        self.digests = digests

    def pre_skip(self, digest: str) -> bool:
        return False  # the blob sent may be a recompressed form: read it

    def holds_none(self) -> bool:
        return not self.digests

    def wants(self, record: BlobRecord) -> bool:
        if record.diff_id is None:
            return True
        return record.digest not in self.digests

    def warm(self, memo: Memo, codec: Codec) -> None:
        pass  # the whole listing is at hand: the memo's digests are looked up there

    def still_has(self, records: Iterable[BlobRecord]) -> bool:
        wanted = {r.digest for r in records if r.diff_id is not None}
        if not wanted or self.target is None:
            return True
        return wanted <= self.target.content()


def probe(host: RemoteHost, want: str, socket: str | None) -> NodeFacts:
    """Run PROBE on ``host`` (one round trip)."""
    done = host.run_shell(probe_script(want, socket), timeout=60)
    if not done.ok:
        raise ConnectionFailed(f"probing {host.name}: {done.why()}")
    return parse_probe(done.text)


def open_on(host: RemoteHost, address: str) -> ContainerdTarget:
    """The containerd of an SSH host already known to have ``ctr`` or ``k3s`` and no
    ``docker`` (shipit.addresses asked it), on the session ``host`` holds."""
    from shipit.daemon.address import parse_address

    where = parse_address(address)
    facts = probe(host, "docker", None)
    node = NodeAddress(address, where.ssh_host or address, where.ssh_user, where.ssh_port)
    return ContainerdTarget.checked(host, facts, node)
