# mypy: disable-error-code="union-attr"
"""pipeserver.http.disposition without a server: the name a receiver asks for,
made harmless, and the header value it becomes (RFC 6266 / RFC 5987).
tests/test_integration_urls.py checks the same on the wire."""

from __future__ import annotations

import pytest

from pipeserver.http import disposition
from pipeserver.http.disposition import Override, header_value, requested, sanitise
from pipeserver.errors import Rejection


def test_a_long_multibyte_name_is_cut_on_a_character_keeping_its_extension():
    name = sanitise(("é" * 200 + ".tar.gz").encode("utf-8"))
    # 126 two-byte characters and ".gz": 255 bytes; odd room is not split.
    assert name == "é" * 126 + ".gz" and len(name.encode("utf-8")) == 255
    assert len(sanitise(b"a" * 1000).encode()) == disposition.MAX_NAME_BYTES
    assert sanitise(("é" * 200 + ".txt").encode("utf-8")) == "é" * 125 + ".txt"  # 254 bytes
    # An "extension" too long to be one is cut with the rest.
    assert sanitise(b"a." + b"b" * 400) == "a." + "b" * 253


@pytest.mark.parametrize("raw", [b"", b"..", b" . ", b"\x00\x01", b"\xe2\x80\xae"])
def test_nothing_usable_left(raw):
    assert sanitise(raw) is None


def test_header_values():
    assert header_value("inline", None) == b"inline"
    assert header_value("attachment", 'a"b') == b'attachment; filename="a\\"b"'
    assert header_value("attachment", "naïve café.txt") == (
        b"attachment; filename=\"naive cafe.txt\"; filename*=UTF-8''na%C3%AFve%20caf%C3%A9.txt"
    )


def test_requested():
    assert requested({}) is None
    assert requested({b"n": [b"2"]}) is None
    assert requested({b"download": [b"1"]}) == Override(True, None)
    assert requested({b"download": [b""]}) == Override(True, None)
    assert requested({b"download": [b"0"], b"filename": [b"a/b"]}) == Override(False, "a_b")
    with pytest.raises(Rejection) as caught:
        requested({b"download": [b"on"]})
    assert caught.value.status == 400


def test_apply_keeps_the_order_of_the_sender_headers():
    headers = [(b"Content-Length", b"3"), (b"Content-Type", b"text/plain"),
               (b"X-Piping", b"x"), (b"Access-Control-Allow-Origin", b"*")]
    assert Override(False, None).apply(headers) == [
        (b"Content-Length", b"3"), (b"Content-Type", b"text/plain"),
        (b"Content-Disposition", b"inline"),
        (b"X-Piping", b"x"), (b"Access-Control-Allow-Origin", b"*")]
    sent = [(b"Content-Type", b"image/png"),
            (b"Content-Disposition", b'form-data; name="f"; filename="x.png"')]
    assert Override(True, None).apply(sent)[1] == (
        b"Content-Disposition", b'attachment; name="f"; filename="x.png"')
    assert Override(None, "y.png").apply(sent)[1] == (
        b"Content-Disposition", b'attachment; filename="y.png"')
