"""One source, several sinks: the pipeline pieces behind `--to a --to b`, in memory."""

from __future__ import annotations

import io
import threading

from imagefactory import legacy_archive, oci_archive, sample_images, validate

from shipit.compression import Codec
from shipit.daemon.delta import classic_skips
from shipit.pipeline import Producer, Result, Subscriber, Tee, subscriber_stream
from shipit.transform import LayerPolicy


def _drain(subscriber: Subscriber, result: Result, out: list[bytes], **kw) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: out.append(b"".join(subscriber_stream(subscriber, result, **kw)))
    )
    thread.start()
    return thread


def test_two_sinks_share_one_producer_and_choose_their_blobs() -> None:
    images = sample_images()
    base = images[0].diff_ids[0]
    subs = [Subscriber("a"), Subscriber("b")]
    producer = Producer(io.BytesIO(legacy_archive(images)), LayerPolicy(Codec("zstd")), subs)
    results, outs = [Result(), Result()], [[], []]
    threads = [
        _drain(subs[0], results[0], outs[0]),
        _drain(subs[1], results[1], outs[1], send_blob=lambda r: r.diff_id != base),
    ]
    producer.start()
    for thread in threads:
        thread.join(10)
    producer.join(10)
    validate(outs[0][0])  # complete
    assert len(results[0].sent) == 3 and len(results[1].sent) == 2
    assert [r.diff_id for r in results[1].skipped] == [base]
    # The second archive lacks the base blob but its manifests still name it.
    assert len(outs[1][0]) < len(outs[0][0])


def test_tee_feeds_one_producer_per_compression() -> None:
    data = oci_archive(sample_images())
    tee = Tee(io.BytesIO(data), 2)
    outs: list[list[bytes]] = [[], []]
    threads, producers = [], []
    for n, codec in enumerate(("zstd", "gzip")):
        sub = Subscriber(codec)
        producers.append(Producer(tee.reader(n), LayerPolicy(Codec(codec)), [sub]))
        threads.append(_drain(sub, Result(), outs[n]))
    for producer in producers:
        producer.start()
    for thread in threads:
        thread.join(10)
    assert validate(outs[0][0]).layer_compressions == {"zstd"}
    assert validate(outs[1][0]).layer_compressions == {"gzip"}


def test_a_sink_that_leaves_does_not_stall_the_other() -> None:
    subs = [Subscriber("dies"), Subscriber("lives")]
    producer = Producer(
        io.BytesIO(legacy_archive(sample_images())), LayerPolicy(Codec("zstd")), subs
    )
    subs[0].leave()  # as a failed target does
    out: list[bytes] = []
    thread = _drain(subs[1], Result(), out)
    producer.start()
    thread.join(10)
    assert not thread.is_alive()
    validate(out[0])


def test_classic_delta_skips_only_where_the_chain_exists_everywhere() -> None:
    a, b, c = ("sha256:" + x * 64 for x in "abc")
    # The target has `b` on top of `a`, not on top of `c`.
    assert classic_skips([[a, b]], [[a, b]]) == {a, b}
    assert classic_skips([[a, b], [c, b]], [[a, b]]) == {a}
    assert classic_skips([[b]], [[a, b]]) == frozenset()  # chain(b) alone is not chain(a, b)
    assert classic_skips([[a, c]], [[a, b], [a, c, b]]) == {a, c}
