"""Tiny images built in memory, in each layout ``docker save`` has written, and one
validator that checks an archive the way both image stores would read it."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field

import zstandard

from shipit import compression


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(files: dict[str, bytes | None], mtime: int = 0) -> bytes:
    """A layer tar; a None value writes an overlay whiteout for that path."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in files.items():
            if content is None:
                head, _, base = path.rpartition("/")
                path = f"{head}/.wh.{base}" if head else f".wh.{base}"
                content = b""
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@dataclass
class TestImage:
    __test__ = False  # an image, not a test class

    tags: list[str]
    layers: list[bytes]  # uncompressed tars
    cmd: list[str] = field(default_factory=lambda: ["/bin/true"])
    architecture: str = "amd64"
    variant: str | None = None

    @property
    def diff_ids(self) -> list[str]:
        return [sha(layer) for layer in self.layers]

    @property
    def config(self) -> bytes:
        value: dict = {
            "architecture": self.architecture,
            "os": "linux",
            "config": {"Cmd": self.cmd},
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids},
            "history": [{"created_by": f"layer {i}"} for i in range(len(self.layers))],
        }
        if self.variant:
            value["variant"] = self.variant
        return json.dumps(value, indent=1).encode()

    @property
    def platform(self) -> dict:
        out = {"architecture": self.architecture, "os": "linux"}
        return {**out, "variant": self.variant} if self.variant else out


def sample_images() -> list[TestImage]:
    base = tar_bytes({"bin/busybox": b"\x7fELF" + bytes(range(256)) * 400, "data/gone.txt": b"x"})
    upper = tar_bytes({"data/gone.txt": None, "app/hello": b"Hello, World!\n" * 50})
    other = tar_bytes({"etc/other": b"other image\n" * 100})
    return [
        TestImage(["rosie:latest", "rosie:test"], [base, upper], ["/app/hello"]),
        TestImage(["other:1"], [base, other]),  # shares the base layer
    ]


def _compress(layer: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(layer, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(layer)
    return layer


def _tar(entries: list[tuple[str, bytes | str]]) -> bytes:
    """An outer archive; a str value makes a symlink to that target."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type = tarfile.SYMTYPE
                info.linkname = content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def legacy_archive(images: list[TestImage]) -> bytes:
    """Engine ≤ 24: <v1id>/layer.tar (symlinked when repeated), <config>.json, manifest.json."""
    entries: list[tuple[str, bytes | str]] = []
    manifest = []
    first_path: dict[str, str] = {}
    for image in images:
        config = image.config
        paths = []
        parent = ""
        for layer in image.layers:
            v1 = hashlib.sha256((parent + sha(layer) + sha(config)).encode()).hexdigest()
            parent = v1
            path = f"{v1}/layer.tar"
            if sha(layer) in first_path:
                entries.append((path, f"../{first_path[sha(layer)]}"))
            else:
                first_path[sha(layer)] = path
                entries.append((f"{v1}/VERSION", b"1.0"))
                entries.append((f"{v1}/json", b'{"id":"' + v1.encode() + b'"}'))
                entries.append((path, layer))
            paths.append(path)
        entries.append((sha(config)[7:] + ".json", config))
        manifest.append(
            {"Config": sha(config)[7:] + ".json", "RepoTags": image.tags, "Layers": paths}
        )
    entries.append(("manifest.json", json.dumps(manifest).encode()))
    entries.append(("repositories", b"{}"))
    return _tar(entries)


def podman_archive(images: list[TestImage]) -> bytes:
    """``podman save --format docker-archive`` (4.3): each layer as ``<diff_id>.tar`` at the
    top, ``<v1id>/layer.tar`` a symlink to it, full references in RepoTags."""
    entries: list[tuple[str, bytes | str]] = []
    manifest = []
    written: set[str] = set()
    for image in images:
        config = image.config
        paths = []
        parent = ""
        for layer in image.layers:
            top = sha(layer)[7:] + ".tar"
            v1 = hashlib.sha256((parent + sha(layer) + sha(config)).encode()).hexdigest()
            parent = v1
            if top not in written:
                written.add(top)
                entries.append((top, layer))
            entries.append((f"{v1}/layer.tar", f"../{top}"))
            entries.append((f"{v1}/VERSION", b"1.0"))
            entries.append((f"{v1}/json", b'{"id":"' + v1.encode() + b'"}'))
            paths.append(top)
        entries.append((sha(config)[7:] + ".json", config))
        tags = [t if "/" in t else f"docker.io/library/{t}" for t in image.tags]
        manifest.append({"Config": sha(config)[7:] + ".json", "RepoTags": tags, "Layers": paths})
    entries.append(("manifest.json", json.dumps(manifest).encode()))
    entries.append(("repositories", b"{}"))
    return _tar(entries)


def oci_archive(
    images: list[TestImage],
    layer_compression: str = "none",
    docker_types: bool = False,
    nested: bool = False,
    with_manifest_json: bool = True,
) -> bytes:
    """Engine 25+ (docker_types=False, uncompressed) or the containerd store
    (docker_types=True, often gzip), optionally with a manifest list above each manifest."""
    blobs: dict[str, bytes] = {}
    index_entries = []
    legacy = []
    for image in images:
        config = image.config
        blobs[sha(config)] = config
        layers = []
        for layer in image.layers:
            data = _compress(layer, layer_compression)
            blobs[sha(data)] = data
            if docker_types:
                mt = "application/vnd.docker.image.rootfs.diff.tar" + (
                    ".gzip" if layer_compression == "gzip" else ""
                )
            else:
                mt = "application/vnd.oci.image.layer.v1.tar" + (
                    "" if layer_compression == "none" else "+" + layer_compression
                )
            layers.append({"mediaType": mt, "digest": sha(data), "size": len(data)})
        manifest_type = (
            "application/vnd.docker.distribution.manifest.v2+json"
            if docker_types
            else "application/vnd.oci.image.manifest.v1+json"
        )
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": manifest_type,
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json"
                    if docker_types
                    else "application/vnd.oci.image.config.v1+json",
                    "digest": sha(config),
                    "size": len(config),
                },
                "layers": layers,
            },
            indent=3,
        ).encode()
        blobs[sha(manifest)] = manifest
        top = {"mediaType": manifest_type, "digest": sha(manifest), "size": len(manifest)}
        if nested:
            absent = "sha256:" + "ab" * 32  # another platform, not saved
            lst = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [
                        {**top, "platform": {"architecture": "amd64", "os": "linux"}},
                        {
                            "mediaType": manifest_type,
                            "digest": absent,
                            "size": 1234,
                            "platform": {"architecture": "arm64", "os": "linux"},
                        },
                    ],
                }
            ).encode()
            blobs[sha(lst)] = lst
            top = {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": sha(lst),
                "size": len(lst),
            }
        for tag in image.tags:
            name = tag if "/" in tag else f"docker.io/library/{tag}"
            index_entries.append(
                {
                    **top,
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[1],
                    },
                }
            )
        legacy.append(
            {
                "Config": "blobs/sha256/" + sha(config)[7:],
                "RepoTags": image.tags,
                "Layers": ["blobs/sha256/" + layer["digest"][7:] for layer in layers],
            }
        )
    entries: list[tuple[str, bytes | str]] = [
        ("blobs/sha256/" + d[7:], data) for d, data in blobs.items()
    ]
    entries.append(("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'))
    entries.append(
        ("index.json", json.dumps({"schemaVersion": 2, "manifests": index_entries}).encode())
    )
    if with_manifest_json:
        entries.append(("manifest.json", json.dumps(legacy).encode()))
    return _tar(entries)


def multi_platform_archive(
    tags: list[str],
    platforms: list[TestImage],
    *,
    absent: list[dict] = (),  # type: ignore[assignment]
    attest: bool = False,
    attestation_blobs: bool = True,
    layer_compression: str = "gzip",
) -> bytes:
    """One image saved the way the containerd store writes it: an index over one manifest
    per platform of ``platforms`` (all present), plus ``absent`` platforms named but not
    in the archive and, with ``attest``, a BuildKit attestation manifest (an in-toto JSON
    layer) for each present one (its blobs left out without ``attestation_blobs``) and for
    each absent one (whose blobs are absent too)."""
    blobs: dict[str, bytes] = {}
    children: list[dict] = []
    attestations: list[dict] = []
    for image in platforms:
        config = image.config
        blobs[sha(config)] = config
        layers = []
        for layer in image.layers:
            data = _compress(layer, layer_compression)
            blobs[sha(data)] = data
            suffix = "" if layer_compression == "none" else "+" + layer_compression
            mt = "application/vnd.oci.image.layer.v1.tar" + suffix
            layers.append({"mediaType": mt, "digest": sha(data), "size": len(data)})
        manifest = _manifest_bytes(config, layers)
        blobs[sha(manifest)] = manifest
        children.append(_entry(manifest, platform=image.platform))
        if attest:
            statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1"}).encode()
            blobs[sha(statement)] = statement
            att_config = json.dumps(
                {
                    "architecture": "unknown",
                    "os": "unknown",
                    "rootfs": {"type": "layers", "diff_ids": [sha(statement)]},
                }
            ).encode()
            blobs[sha(att_config)] = att_config
            att = _manifest_bytes(
                att_config,
                [
                    {
                        "mediaType": "application/vnd.in-toto+json",
                        "digest": sha(statement),
                        "size": len(statement),
                    }
                ],
            )
            if attestation_blobs:
                blobs[sha(att)] = att
            else:
                for digest in (sha(statement), sha(att_config)):
                    del blobs[digest]
            attestations.append(_attestation_entry(att, sha(manifest)))
    for n, plat in enumerate(absent):
        missing = "sha256:" + f"{n + 1:02x}" * 32
        children.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": missing,
                "size": 1000 + n,
                "platform": plat,
            }
        )
        if attest:
            attestations.append(
                {**_attestation_entry(b"x", missing), "digest": "sha256:" + f"{n + 9:02x}" * 32}
            )
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children + attestations,
        }
    ).encode()
    blobs[sha(index)] = index
    top = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": sha(index),
        "size": len(index),
    }
    entries = []
    for tag in tags:
        name = tag if "/" in tag else f"docker.io/library/{tag}"
        entries.append(
            {
                **top,
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[1],
                },
            }
        )
    files: list[tuple[str, bytes | str]] = [
        ("blobs/sha256/" + d[7:], data) for d, data in blobs.items()
    ]
    files.append(("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'))
    files.append(("index.json", json.dumps({"schemaVersion": 2, "manifests": entries}).encode()))
    return _tar(files)


def _manifest_bytes(config: bytes, layers: list[dict]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": layers,
        }
    ).encode()


def _entry(manifest: bytes, **extra: object) -> dict:
    return {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha(manifest),
        "size": len(manifest),
        **extra,
    }


def _attestation_entry(manifest: bytes, about: str) -> dict:
    return _entry(
        manifest,
        platform={"architecture": "unknown", "os": "unknown"},
        annotations={
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": about,
        },
    )


# Validation -----------------------------------------------------------------------


def read_tar(data: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if member.isdir():
                continue
            assert member.isreg(), f"{member.name} is not a regular file"
            assert member.name not in files, f"{member.name} written twice"
            f = tar.extractfile(member)
            assert f is not None
            files[member.name] = f.read()
    return files


def decompress(data: bytes) -> bytes:
    return compression.decompressor(compression.detect(data), io.BytesIO(data)).read()


@dataclass
class Checked:
    files: dict[str, bytes]
    tags: dict[str, str]  # full name → top-level digest
    layer_compressions: set[str]
    configs: dict[str, bytes]  # tag → config bytes


def validate(data: bytes) -> Checked:
    """Assert an archive is what both image stores load: every blob under its digest,
    index.json → manifests → config and layers complete, diff_ids intact, manifest.json
    pointing at files that exist."""
    files = read_tar(data)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, content in files.items():
        if name.startswith("blobs/"):
            assert name == "blobs/" + sha(content).replace(":", "/"), f"{name} has wrong digest"

    def blob(digest: str, size: int) -> bytes:
        content = files["blobs/" + digest.replace(":", "/")]
        assert len(content) == size, f"{digest} size {len(content)} != {size}"
        return content

    kinds: set[str] = set()
    tags: dict[str, str] = {}
    configs: dict[str, bytes] = {}

    def check_manifest(desc: dict) -> bytes:
        manifest = json.loads(blob(desc["digest"], desc["size"]))
        assert manifest["mediaType"] == desc["mediaType"]
        config = blob(manifest["config"]["digest"], manifest["config"]["size"])
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        assert len(diff_ids) == len(manifest["layers"])
        for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            content = blob(layer["digest"], layer["size"])
            if "rootfs" not in layer["mediaType"] and "image.layer" not in layer["mediaType"]:
                assert sha(content) == diff_id  # e.g. an in-toto statement: kept as it is
                continue
            kind = compression.detect(content)
            kinds.add(kind)
            suffix = {"none": "tar", "gzip": "gzip", "zstd": "zstd"}[kind]
            assert layer["mediaType"].endswith(suffix), (layer["mediaType"], kind)
            assert sha(decompress(content)) == diff_id
        return config

    def check_node(desc: dict) -> bytes | None:
        if "index" in desc["mediaType"] or "list" in desc["mediaType"]:
            index = json.loads(blob(desc["digest"], desc["size"]))
            config = None
            for child in index["manifests"]:
                if "blobs/" + child["digest"].replace(":", "/") in files:
                    config = check_node(child) or config
            return config
        return check_manifest(desc)

    index = json.loads(files["index.json"])
    for entry in index["manifests"]:
        config = check_node(entry)
        name = entry["annotations"]["io.containerd.image.name"]
        assert entry["annotations"]["org.opencontainers.image.ref.name"] == name.rsplit(":", 1)[1]
        tags[name] = entry["digest"]
        if config:
            configs[name] = config
    for item in json.loads(files["manifest.json"]):
        config = files[item["Config"]]
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        for path, diff_id in zip(item["Layers"], diff_ids, strict=True):
            assert sha(decompress(files[path])) == diff_id
    return Checked(files, tags, kinds, configs)
