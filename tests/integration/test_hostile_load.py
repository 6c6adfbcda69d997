"""``shipit load`` of every hostile archive (tests/unit/hostile_corpus.py) into the rig's
engines: refused with exit 2 and one line, and the engine gains no image.

Every case goes into d26 (classic store, reads zstd); a sample that fails at different
points of the stream (first entry, mid-blob, after every blob was sent, inside a layer)
also goes into d26c (containerd store), d20 (Engine 20.10, gzip only), d28 and d28c
(Engine 28.5, whose containerd store keeps an image it could not unpack).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from engines import said, socket
from unit import hostile_corpus
from unit.hostile_corpus import MAX_LAYER, Case, writer

pytestmark = pytest.mark.integration

CASES = hostile_corpus.by_name()
REPO = Path(__file__).resolve().parents[2]

#: Cases that fail at different points: before anything is sent, mid-blob, after every
#: blob went out (the model is built at the end), inside a layer, in the outer wrapper.
SAMPLE = (
    "absolute-path",
    "symlink-layer-escapes",
    "layer-digest-mismatch",
    "manifest-points-at-missing-layer",
    "diff-ids-mismatch",
    "truncated-gzip-layer",
    "bomb-zstd-layer",
    "truncated-zstd-outer",
    "index-json-twice",
    "media-type-layer-in-index",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return writer(tmp_path_factory.mktemp("corpus"))


def _codec(engine: str, case: Case) -> list[str]:
    """A compression that makes the load recompress (so decompress) a damaged layer;
    d20 cannot take zstd, so there a gzip layer is decompressed into none."""
    if not case.codec:
        return []
    codec = "none" if engine == "d20" and case.codec == "zstd" else case.codec
    return ["--compression", codec]


def _docker(rig: dict[str, Any], engine: str, *args: str) -> str:
    done = subprocess.run(
        [rig.get("docker_cli", "docker"), "-H", socket(rig, engine), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"docker {' '.join(args)} on {engine}: {done.stderr}"
    return done.stdout


def _image_ids(rig: dict[str, Any], engine: str) -> set[str]:
    return set(_docker(rig, engine, "images", "-a", "-q", "--no-trunc").split())


def _fingerprints(data: bytes) -> set[str]:
    """Digests an image loaded from this archive could be known by: every member's sha256
    (blob, config, manifest, uncompressed layer) and every diff_id its configs list."""
    out: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                f = tar.extractfile(member) if member.isreg() else None
                if f is None:
                    continue
                content = f.read()
                out.add("sha256:" + hashlib.sha256(content).hexdigest())
                try:
                    value = json.loads(content)
                except (ValueError, RecursionError):
                    continue
                rootfs = value.get("rootfs") if isinstance(value, dict) else None
                if isinstance(rootfs, dict) and isinstance(rootfs.get("diff_ids"), list):
                    out.update(d for d in rootfs["diff_ids"] if isinstance(d, str))
    except (tarfile.TarError, EOFError, OSError, ValueError):
        pass  # not readable as a tar: the sample images' own digests still count
    for image in hostile_corpus.sample_images():
        out.update(image.diff_ids)
        out.add("sha256:" + hashlib.sha256(image.config).hexdigest())
    return out


def _ours(rig: dict[str, Any], engine: str, ids: set[str], fingerprints: set[str]) -> set[str]:
    """Of the images that appeared, those that came from this archive. Other tests may
    load into the same engine meanwhile; an image is ours if its ID or a layer is."""
    mine = set()
    for image_id in ids:
        if image_id in fingerprints:
            mine.add(image_id)
            continue
        done = subprocess.run(
            [
                rig.get("docker_cli", "docker"),
                "-H",
                socket(rig, engine),
                "image",
                "inspect",
                image_id,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            continue  # gone again: another test's
        layers = json.loads(done.stdout)[0].get("RootFS", {}).get("Layers") or []
        if fingerprints & set(layers):
            mine.add(image_id)
    return mine


def _load_refused(rig: dict[str, Any], engine: str, case: Case, archive: Path, tmp: Path) -> None:
    work = {name: tmp / name for name in ("tmp", "cwd")}
    for folder in work.values():
        folder.mkdir()
    before = _image_ids(rig, engine)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shipit",
            "load",
            str(archive),
            "--to",
            socket(rig, engine),
            *_codec(engine, case),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=work["cwd"],
        env={
            **os.environ,
            "SHIPIT_TMPDIR": str(work["tmp"]),
            "TMPDIR": str(work["tmp"]),
            "SHIPIT_MAX_LAYER_SIZE": str(MAX_LAYER),
            "PYTHONPATH": str(REPO),
        },
    )
    appeared = _image_ids(rig, engine) - before
    where = f"load {case.name} into {engine}: rc={done.returncode} stderr={done.stderr!r}"
    assert "Traceback" not in done.stderr, where
    assert done.returncode == 2, where
    lines = said(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("shipit: error: "), where
    assert re.search(case.expect, lines[0]), f"{where} does not match {case.expect!r}"
    assert done.stdout == "", where
    for name, folder in work.items():
        assert os.listdir(folder) == [], f"{where}: files left in {name}/"
    ours = _ours(rig, engine, appeared, _fingerprints(archive.read_bytes()))
    assert ours == set(), f"{where}: the engine gained {sorted(ours)}"


@pytest.mark.parametrize("name", CASES)
def test_load_refused_d26(rig, corpus, tmp_path, name):
    _load_refused(rig, "d26", CASES[name], corpus(CASES[name]), tmp_path)


@pytest.mark.parametrize("engine", ("d26c", "d20", "d28", "d28c"))
@pytest.mark.parametrize("name", SAMPLE)
def test_load_refused_other_engines(rig, corpus, tmp_path, engine, name):
    _load_refused(rig, engine, CASES[name], corpus(CASES[name]), tmp_path)
