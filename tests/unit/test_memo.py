"""The memo of compressed layers: what it records, and what a policy does with a hit."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from imagefactory import oci_archive, read_tar, sample_images, validate

from shipit import compression
from shipit.compression import Codec
from shipit.errors import DigestMismatch
from shipit.memo import Compressed, Memo
from shipit.pipeline import Result, convert_stream
from shipit.transform import LayerPolicy


def convert(data: bytes, policy: LayerPolicy) -> tuple[bytes, Result]:
    result = Result()
    return b"".join(convert_stream(io.BytesIO(data), policy, result)), result


def layers(result: Result) -> list:
    return [r for r in result.blobs if r.diff_id is not None]


def test_a_recompression_is_remembered_with_its_digest_size_and_diff_id(tmp_path: Path) -> None:
    memo = Memo(tmp_path)
    _, result = convert(oci_archive(sample_images()), LayerPolicy(Codec("zstd"), memo=memo))
    assert len(layers(result)) == 3
    for record in layers(result):
        assert memo.get(record.source_digest, Codec("zstd")) == Compressed(
            record.digest, record.size, "zstd", record.diff_id
        )
        assert memo.get(record.source_digest, Codec("zstd", level=9)) is None
        assert memo.get(record.source_digest, Codec("gzip")) is None


def test_a_known_layer_is_checked_but_not_compressed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo = Memo(tmp_path)
    archive = oci_archive(sample_images())
    first, before = convert(archive, LayerPolicy(Codec("zstd"), memo=memo))

    def no_compressing(*args: object) -> None:
        raise AssertionError("compressed a layer the memo knows")

    monkeypatch.setattr(compression, "compressor", no_compressing)
    policy = LayerPolicy(Codec("zstd"), known=lambda d: memo.get(d, Codec("zstd")))
    second, after = convert(archive, policy)
    # Described as the blobs of the first run (so the same manifests), but not kept: a
    # sink that takes this archive must already hold them.
    assert [(r.digest, r.size, r.diff_id) for r in layers(after)] == [
        (r.digest, r.size, r.diff_id) for r in layers(before)
    ]
    assert {r.digest for r in after.skipped} == {r.digest for r in layers(before)}
    assert after.output is not None and before.output is not None
    assert after.output.index_json == before.output.index_json
    assert after.output.documents == before.output.documents
    sent = {name for name in read_tar(second) if name.startswith("blobs/")}
    assert not sent & {"blobs/" + r.digest.replace(":", "/") for r in layers(before)}
    validate(first)


def test_a_known_layer_is_dropped_unhashed_and_a_kept_one_is_checked(tmp_path: Path) -> None:
    memo = Memo(tmp_path)
    archive = oci_archive(sample_images())
    convert(archive, LayerPolicy(Codec("zstd"), memo=memo))
    marker = b"Hello, World!\n"
    assert archive.count(marker) >= 1
    bad = archive.replace(marker, b"Hello, Wrold!\n", 1)
    policy = LayerPolicy(Codec("zstd"), known=lambda d: memo.get(d, Codec("zstd")))
    # The sinks hold that layer: its bytes reach nothing, so the damage changes nothing.
    good_out, good = convert(archive, policy)
    bad_out, damaged = convert(bad, policy)
    assert bad_out == good_out and b"Wrold" not in bad_out
    assert damaged.output is not None and good.output is not None
    assert damaged.output.documents == good.output.documents
    with pytest.raises(DigestMismatch):  # a layer that is sent is checked
        convert(bad, LayerPolicy(Codec("zstd")))


def test_a_damaged_or_foreign_entry_is_not_known(tmp_path: Path) -> None:
    memo = Memo(tmp_path)
    _, result = convert(oci_archive(sample_images()), LayerPolicy(Codec("zstd"), memo=memo))
    record = layers(result)[0]
    entry = tmp_path / "compressed" / "zstd-3" / record.source_digest.removeprefix("sha256:")
    good = json.loads(entry.read_text())
    for broken in ("{", "[]", json.dumps({**good, "digest": "md5:00"}), json.dumps({})):
        entry.write_text(broken)
        assert memo.get(record.source_digest, Codec("zstd")) is None
    entry.write_text(json.dumps({**good, "compression": "gzip"}))
    assert memo.get(record.source_digest, Codec("zstd")) is None
    assert memo.get("sha256:../../etc", Codec("zstd")) is None


def test_an_unwritable_memo_is_silently_skipped(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    memo = Memo(blocker)
    out, _ = convert(oci_archive(sample_images()), LayerPolicy(Codec("zstd"), memo=memo))
    validate(out)
    assert not list(tmp_path.glob("**/.tmp-*"))


def _write_many(root: str, worker: int, rounds: int) -> None:
    """One process of the concurrent-writers test: the same 8 entries, over and over."""
    from shipit.archive.reader import BlobRecord

    memo = Memo(Path(root))
    for n in range(rounds):
        for k in range(8):
            source = "sha256:" + f"{k:02x}" * 32
            memo.remember(
                Codec("zstd"),
                BlobRecord(
                    key=source,
                    source_digest=source,
                    source_size=100,
                    source_compression="none",
                    digest="sha256:" + f"{(k + 1) % 256:02x}" * 32,
                    size=1000 + k,
                    compression="zstd",
                    diff_id=source,
                ),
            )
        if n % 10 == 0:
            for k in range(8):
                got = memo.get("sha256:" + f"{k:02x}" * 32, Codec("zstd"))
                assert got is None or got.size == 1000 + k, (worker, got)


def test_concurrent_writers_leave_every_entry_whole(tmp_path: Path) -> None:
    """Several shipit processes remembering the same layers at once: every entry read is
    complete and right (never half-written), and no temp file is left behind."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), w, 200)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    memo = Memo(tmp_path)
    for k in range(8):
        got = memo.get("sha256:" + f"{k:02x}" * 32, Codec("zstd"))
        assert got is not None and got.size == 1000 + k and got.compression == "zstd"
    left = [p.name for p in (tmp_path / "compressed").rglob("*") if p.name.startswith(".tmp")]
    assert left == []


def test_landings_remember_checked_target_ids(tmp_path):
    from shipit.landings import KEEP, Landings

    source, target = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    landings = Landings(tmp_path)
    assert landings.ids(source) == {source}  # an image is always known by its own ID
    assert not landings.landed_before(source)
    landings.remember(source, source)  # a classic store: the same ID there
    assert landings.landed_before(source) and landings.ids(source) == {source}
    landings.remember(source, target)
    landings.remember(source, target)  # once is enough
    assert Landings(tmp_path).ids(source) == {source, target}
    for n in range(KEEP + 3):
        landings.remember(source, f"sha256:{n:064x}")
    assert len(landings.ids(source)) == KEEP + 1  # the newest KEEP, and itself


def test_landings_ignore_what_is_not_a_digest(tmp_path):
    from shipit.landings import Landings

    source = "sha256:" + "c" * 64
    landings = Landings(tmp_path)
    landings.remember("not-a-digest", "sha256:" + "d" * 64)
    landings.remember(source, "sha256:short")
    assert landings.ids(source) == {source}
    (tmp_path / "landed").mkdir(exist_ok=True)
    (tmp_path / "landed" / ("c" * 64)).write_text(
        '["sha256:../../etc", 7, "' + "sha256:" + "e" * 64 + '"]'
    )
    assert landings.ids(source) == {source, "sha256:" + "e" * 64}
    (tmp_path / "landed" / ("c" * 64)).write_text("{broken")
    assert landings.ids(source) == {source}
