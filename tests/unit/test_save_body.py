"""How a save's chunked HTTP body is read: the pieces, and each way it can be malformed."""

from __future__ import annotations

import http.client
import io
import os

import pytest

from shipit.daemon.engine import _unchunked


def framed(*chunks: bytes, trailer: bytes = b"", extension: bytes = b"") -> bytes:
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), extension, c) for c in chunks)
    return body + b"0\r\n" + trailer + b"\r\n"


def read(data: bytes, size: int) -> list[bytes]:
    return list(_unchunked(io.BufferedReader(io.BytesIO(data), 1 << 16), size))


@pytest.mark.parametrize("size", [1, 7, 4096, 32768, 100_000])
def test_pieces_are_the_body_in_order_and_full_but_the_last(size: int) -> None:
    chunks = [os.urandom(n) for n in (32768, 32768, 5632, 1, 32768, 17)]
    pieces = read(framed(*chunks), size)
    assert b"".join(pieces) == b"".join(chunks)
    assert all(len(p) == size for p in pieces[:-1])
    assert 0 < len(pieces[-1]) <= size
    assert all(type(p) is bytes for p in pieces)  # not views of a buffer reused after


def test_what_follows_the_body_is_left_unread() -> None:
    stream = io.BufferedReader(io.BytesIO(framed(b"abc", trailer=b"X-T: 1\r\n") + b"NEXT"))
    assert list(_unchunked(stream, 2)) == [b"ab", b"c"]
    assert stream.read() == b"NEXT"


def test_chunk_extensions_are_ignored() -> None:
    assert read(framed(b"hello", extension=b";name=value"), 64) == [b"hello"]


def test_an_empty_body_yields_nothing() -> None:
    assert read(b"0\r\n\r\n", 64) == []


def test_a_body_cut_inside_a_chunk_is_incomplete() -> None:
    data = framed(b"x" * 1000)[:500]
    with pytest.raises(http.client.IncompleteRead):
        read(data, 64)


def test_a_body_cut_before_its_last_chunk_is_incomplete() -> None:
    data = framed(b"x" * 10).removesuffix(b"0\r\n\r\n")
    with pytest.raises(http.client.IncompleteRead):
        read(data, 64)


def test_a_size_line_that_is_not_hex_is_refused() -> None:
    with pytest.raises(http.client.HTTPException, match="bad chunk size"):
        read(b"zz\r\nabc\r\n0\r\n\r\n", 64)


def test_a_chunk_longer_than_it_said_is_refused() -> None:
    with pytest.raises(http.client.HTTPException, match="CRLF"):
        read(b"3\r\nabcd\r\n0\r\n\r\n", 64)
