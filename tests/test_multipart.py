"""The streaming first-part decoder of ``multipart/form-data`` bodies."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.web.http_headers import Headers

from pipeserver.headers import passable
from pipeserver.domain.multipart import (
    _TOKEN,
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


# ------------------------------------------------------------ linear, same output
class QuadraticDecoder:
    """The decoder as it was before issue 10 (item 6): it re-joined and
    re-searched everything it held on every call. Kept as the oracle of
    what the linear one must give, error for error, split for split."""

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"--" + boundary
        self._marker = b"\r\n" + self._delimiter
        self._buffer = b""
        self._stage = "preamble"
        self.headers: Optional[Headers] = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        if self._stage == "preamble":
            at = 0 if buffer.startswith(self._delimiter) else buffer.find(self._marker)
            if at > 0:
                at += 2
            line_end = buffer.find(b"\r\n", at + len(self._delimiter)) if at >= 0 else -1
            if line_end < 0:
                if len(buffer) > MAX_PREAMBLE:
                    raise MultipartError("no boundary in the form body")
                self._buffer = buffer
                return b""
            self._stage = "headers"
            buffer = buffer[line_end + 2 :]
        if self._stage == "headers":
            if buffer.startswith(b"\r\n"):
                end, head = 0, b""
            else:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_PART_HEADERS:
                        raise MultipartError("form part headers too long")
                    self._buffer = buffer
                    return b""
                head = buffer[:end]
                end += 2
            headers = Headers()
            for line in head.split(b"\r\n") if head else ():
                name, sep, value = line.partition(b":")
                # The header rules added since (a name is a token; a value
                # with a control byte is left out), as the reference too.
                if not sep or not _TOKEN.match(name.strip()):
                    raise MultipartError("bad form part header")
                if passable(value.strip()):
                    headers.addRawHeader(name.strip(), value.strip())
            self.headers = headers
            self._stage = "body"
            buffer = buffer[end + 2 :]
        at = buffer.find(self._marker)
        if at >= 0:
            self.done = True
            return buffer[:at]
        cut = max(0, len(buffer) - (len(self._marker) - 1))
        self._buffer = buffer[cut:]
        return buffer[:cut]


def outcome(decoder_class: type, pieces: Sequence[bytes], boundary: bytes = b"bd") -> tuple:
    """All a decoder gives for ``pieces``: output (per call), headers, done, error."""
    decoder = decoder_class(boundary)
    out: List[bytes] = []
    error = None
    try:
        for piece in pieces:
            out.append(decoder.feed(piece))
    except Exception as e:  # noqa: BLE001  (Headers rejects some names itself)
        error = f"{type(e).__name__}: {e}"
    return out, headers_of(decoder), decoder.done, error


# Pieces a form body is made of, near-misses of the boundary ("bd") included.
FRAGMENTS = [
    b"--bd", b"\r\n--bd", b"\r\n--b", b"\r\n-", b"\r\n", b"\r", b"\n", b"--", b"-",
    b"X-A: 1\r\n", b"Content-Type: t/t\r\n", b"no colon\r\n", b"\r\n\r\n", b"--bd--",
    b"data", b"\x00\xff", b"  ",
]


@st.composite
def form_bodies(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=8), max_size=30))
    if draw(st.booleans()):
        parts.insert(0, b"--bd\r\n")
    if draw(st.booleans()):
        # A long preamble or header block: near and past the limits.
        fill = draw(st.sampled_from([MAX_PREAMBLE - 40, MAX_PREAMBLE + 3, MAX_PART_HEADERS + 1]))
        parts.insert(draw(st.integers(0, len(parts))), b"y" * fill)
    return b"".join(parts)


def cuts_of(body: bytes, points: List[int]) -> List[bytes]:
    at = sorted({min(p, len(body)) for p in points})
    return [body[a:b] for a, b in zip([0] + at, at + [len(body)])]


@settings(max_examples=400, deadline=None)
@given(body=form_bodies(), points=st.lists(st.integers(0, 70_000), max_size=10))
def test_same_outcome_as_the_quadratic_decoder(body: bytes, points: List[int]) -> None:
    for pieces in ([body], cuts_of(body, points)):
        assert outcome(FirstPartDecoder, pieces) == outcome(QuadraticDecoder, pieces)


@settings(max_examples=60, deadline=None)
@given(body=form_bodies())
def test_one_byte_at_a_time_gives_what_one_piece_gives(body: bytes) -> None:
    pieces = [body[i : i + 1] for i in range(len(body))]
    out, headers, done, error = outcome(FirstPartDecoder, pieces)
    assert (out, headers, done, error) == outcome(QuadraticDecoder, pieces)
    whole_out, whole_headers, whole_done, whole_error = outcome(FirstPartDecoder, [body])
    if error is None and whole_error is None:
        # Only a limit can be met in one split and not in another.
        assert (b"".join(out), headers, done) == (b"".join(whole_out), whole_headers, whole_done)


@pytest.mark.parametrize("size", [MAX_PREAMBLE - 7, MAX_PREAMBLE - 6, MAX_PREAMBLE + 1])
@pytest.mark.parametrize("step", [1, 3, 4096])
def test_preamble_limit_as_before(size: int, step: int) -> None:
    body = b"p" * size + b"\r\n--b\r\nX: 1\r\n\r\nend\r\n--b--"
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    assert outcome(FirstPartDecoder, pieces, b"b") == outcome(QuadraticDecoder, pieces, b"b")


@pytest.mark.parametrize("size", [MAX_PART_HEADERS - 12, MAX_PART_HEADERS + 1])
@pytest.mark.parametrize("step", [1, 5, 4096])
def test_part_header_limit_as_before(size: int, step: int) -> None:
    body = b"--b\r\nX-Long: " + b"z" * size + b"\r\n\r\nend\r\n--b--"
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    assert outcome(FirstPartDecoder, pieces, b"b") == outcome(QuadraticDecoder, pieces, b"b")


def test_preamble_holds_no_more_than_a_marker() -> None:
    decoder = FirstPartDecoder(BOUNDARY)
    for _ in range(1000):
        decoder.feed(b"z" * 50)
    # Bounded lookback: only what could start a marker is kept.
    assert len(decoder._buffer) < len(b"\r\n--" + BOUNDARY)


def test_a_part_header_without_a_name_is_a_broken_form() -> None:
    # Headers itself raises on an empty name (Twisted 26): that must reach
    # the pipe as the MultipartError it handles, not as a crash.
    assert outcome(FirstPartDecoder, [b"--bd\r\n:\x00\r\n\r\n"]) == (
        [], None, False, "MultipartError: bad form part header"
    )
    assert outcome(FirstPartDecoder, [b"--bd\r\nBad Name: x\r\n\r\n"])[3] == (
        "MultipartError: bad form part header"
    )
