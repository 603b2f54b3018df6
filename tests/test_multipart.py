"""The streaming first-part decoder of ``multipart/form-data`` bodies."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeserver.multipart import (
    MAX_PART_HEADERS,
    MAX_PREAMBLE,
    FirstPartDecoder,
    MultipartError,
    boundary_of,
)

BOUNDARY = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"

CONTENT = (
    b"line one\r\n"
    b"--not the boundary\r\n"
    b"\r\n------WebKitFormBoundary7MA4YWxk almost\r\n"  # a prefix of the marker
    b"\r\n-" + bytes(range(256)) + b"\r\n--\r\n"
)

BODY = (
    b"--" + BOUNDARY + b"\r\n"
    b'Content-Disposition: form-data; name="input_file"; filename="a b.bin"\r\n'
    b"Content-Type: application/octet-stream\r\n"
    b"\r\n" + CONTENT + b"\r\n"
    b"--" + BOUNDARY + b"\r\n"
    b'Content-Disposition: form-data; name="second"\r\n'
    b"\r\n"
    b"not delivered\r\n"
    b"--" + BOUNDARY + b"--\r\n"
)

HEADERS = [
    (b"content-disposition", [b'form-data; name="input_file"; filename="a b.bin"']),
    (b"content-type", [b"application/octet-stream"]),
]


def decode(pieces: Sequence[bytes], boundary: bytes = BOUNDARY) -> Tuple[bytes, FirstPartDecoder]:
    decoder = FirstPartDecoder(boundary)
    out: List[bytes] = []
    for piece in pieces:
        out.append(decoder.feed(piece))
    return b"".join(out), decoder


def headers_of(decoder: FirstPartDecoder) -> Optional[List]:
    if decoder.headers is None:
        return None
    return sorted((name.lower(), values) for name, values in decoder.headers.getAllRawHeaders())


def test_whole_body_at_once() -> None:
    data, decoder = decode([BODY])
    assert data == CONTENT
    assert headers_of(decoder) == HEADERS
    assert decoder.done
    assert decoder.feed(b"anything after") == b""


@pytest.mark.parametrize("at", range(len(BODY) + 1))
def test_split_at_every_offset(at: int) -> None:
    data, decoder = decode([BODY[:at], BODY[at:]])
    assert data == CONTENT
    assert headers_of(decoder) == HEADERS
    assert decoder.done


def test_one_byte_at_a_time() -> None:
    decoder = FirstPartDecoder(BOUNDARY)
    out = []
    for i in range(len(BODY)):
        out.append(decoder.feed(BODY[i : i + 1]))
    assert b"".join(out) == CONTENT
    assert headers_of(decoder) == HEADERS and decoder.done


@pytest.mark.parametrize("at", range(1, len(BODY)))
def test_three_pieces_around_every_offset(at: int) -> None:
    # A short middle piece: the boundary, the headers' end, straddled in three.
    mid = min(len(BODY), at + 3)
    data, decoder = decode([BODY[:at], BODY[at:mid], BODY[mid:]])
    assert data == CONTENT and decoder.done


@settings(max_examples=300, deadline=None)
@given(
    content=st.binary(max_size=600),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_split_any_content(content: bytes, cuts: List[int]) -> None:
    marker = b"\r\n--" + BOUNDARY
    if marker in content + b"\r\n--" + BOUNDARY[:-1]:
        content = content.replace(b"\r", b"")
    body = (
        b"preamble\r\n--" + BOUNDARY + b"\r\nContent-Type: x/y\r\n\r\n"
        + content + marker + b"--\r\n"
    )
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0] + points, points + [len(body)])]
    data, decoder = decode(pieces)
    assert data == content
    assert headers_of(decoder) == [(b"content-type", [b"x/y"])]
    assert decoder.done


def test_boundary_split_across_chunks() -> None:
    body = b"--" + BOUNDARY + b"\r\n\r\nhello" + b"\r\n--" + BOUNDARY + b"--\r\n"
    end_of_content = body.index(b"hello") + 5
    for at in range(end_of_content, len(body)):
        decoder = FirstPartDecoder(BOUNDARY)
        first = decoder.feed(body[:at])
        # Nothing that might be the boundary is given out.
        assert first == b"hello"[: len(first)]
        marker_in_first = at >= end_of_content + len(b"\r\n--" + BOUNDARY)
        assert decoder.done is marker_in_first
        assert first + decoder.feed(body[at:]) == b"hello"
        assert decoder.done


def test_holds_back_at_most_a_marker() -> None:
    decoder = FirstPartDecoder(BOUNDARY)
    assert decoder.feed(b"--" + BOUNDARY + b"\r\n\r\n") == b""
    payload = b"x" * 100_000
    out = decoder.feed(payload)
    held = len(payload) - len(out)
    assert out == payload[: len(out)]
    assert 0 < held < len(b"\r\n--" + BOUNDARY)


def test_part_without_headers() -> None:
    body = b"--b\r\n\r\ncontent\r\n--b--\r\n"
    data, decoder = decode([body], b"b")
    assert data == b"content"
    assert headers_of(decoder) == []
    assert decoder.done


def test_empty_part() -> None:
    body = b"--b\r\nContent-Type: t/t\r\n\r\n\r\n--b--\r\n"
    data, decoder = decode([body], b"b")
    assert data == b"" and decoder.done
    assert headers_of(decoder) == [(b"content-type", [b"t/t"])]


def test_preamble_is_skipped() -> None:
    body = b"ignore me\r\nand me\r\n--b\r\nX-A: 1\r\n\r\npart\r\n--b--"
    for at in range(len(body) + 1):
        data, decoder = decode([body[:at], body[at:]], b"b")
        assert data == b"part" and decoder.done


def test_not_done_without_closing_boundary() -> None:
    data, decoder = decode([b"--b\r\n\r\nno end in sight"], b"b")
    assert not decoder.done
    assert b"no end in sight".startswith(data)


# ------------------------------------------------------------ errors
def test_missing_boundary_in_body() -> None:
    decoder = FirstPartDecoder(b"b")
    with pytest.raises(MultipartError):
        for _ in range(MAX_PREAMBLE // 1000 + 2):
            decoder.feed(b"y" * 1000)


def test_part_headers_too_long() -> None:
    decoder = FirstPartDecoder(b"b")
    decoder.feed(b"--b\r\nX-Long: ")
    with pytest.raises(MultipartError):
        decoder.feed(b"z" * (MAX_PART_HEADERS + 1))


def test_bad_part_header_line() -> None:
    with pytest.raises(MultipartError):
        FirstPartDecoder(b"b").feed(b"--b\r\nno colon here\r\n\r\ndata")


# ------------------------------------------------------------ boundary_of
@pytest.mark.parametrize(
    "content_type, boundary",
    [
        (b"multipart/form-data; boundary=abc", b"abc"),
        (b"multipart/form-data;boundary=abc", b"abc"),
        (b"Multipart/Form-Data; BOUNDARY=abc", b"abc"),
        (b'multipart/form-data; boundary="quoted ab"', b"quoted ab"),
        (b'multipart/form-data; charset=utf-8; boundary="a=b"', b"a=b"),
        (b"multipart/form-data; boundary=" + BOUNDARY, BOUNDARY),
        (b"multipart/form-data", None),
        (b"multipart/form-data; boundary=", None),
        (b'multipart/form-data; boundary=""', None),
        (b"multipart/mixed; boundary=abc", None),
        (b"text/plain; boundary=abc", None),
        (b"application/octet-stream", None),
    ],
)
def test_boundary_of(content_type: bytes, boundary: Optional[bytes]) -> None:
    assert boundary_of(content_type) == boundary


def test_quoted_boundary_decodes() -> None:
    boundary = boundary_of(b'multipart/form-data; boundary="q b"')
    assert boundary == b"q b"
    data, decoder = decode([b"--q b\r\n\r\nquoted\r\n--q b--\r\n"], boundary)
    assert data == b"quoted" and decoder.done
