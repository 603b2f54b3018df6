# mypy: disable-error-code="var-annotated"
"""chunked.ViewChunkedDecoder decodes exactly as Twisted's decoder does,
however the input is split, and hands chunk data on without copying."""

import random

import pytest
from twisted.web import http

from pipeserver.http.chunked import ViewChunkedDecoder


def _run(cls, pieces, batch=False):
    out, done, error = [], [], None
    decoder = cls(lambda d: out.append(bytes(d)), done.append)
    if batch:
        decoder.batchCallback = lambda many: out.extend(bytes(d) for d in many)
    try:
        for piece in pieces:
            decoder.dataReceived(piece)
    except Exception as e:  # noqa: BLE001 - compared below
        error = type(e)
    return b"".join(out), done, error, decoder.state


def _split(data, rng):
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6))))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def _body(rng):
    parts = []
    for _ in range(rng.randint(0, 5)):
        chunk = rng.randbytes(rng.randint(1, 3000))
        ext = rng.choice([b"", b";a=b", b";x"])
        parts.append(b"%x%s\r\n%s\r\n" % (len(chunk), ext, chunk))
    parts.append(rng.choice([b"0\r\n\r\n", b"0\r\nX-T: 1\r\n\r\n"]))
    return b"".join(parts) + rng.choice([b"", b"GET / HTTP/1.1\r\n\r\n"])


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("seed", range(300))
def test_same_as_twisted(seed, batch):
    rng = random.Random(seed)
    data = _body(rng)
    if seed % 3 == 0:  # break it somewhere
        at = rng.randrange(len(data))
        data = data[:at] + rng.choice([b"z", b"\n", b"\r", b"-1", b"\r\n"]) + data[at + 1:]
    pieces = _split(data, rng)
    assert _run(ViewChunkedDecoder, pieces, batch) == _run(http._ChunkedTransferDecoder, pieces)


def test_body_is_not_copied():
    got = []
    decoder = ViewChunkedDecoder(got.append, lambda rest: None)
    decoder.dataReceived(b"10\r\n")
    read = b"0123456789abcdef"
    decoder.dataReceived(read)
    assert got == [read] and got[0] is read
    decoder.dataReceived(b"\r\n4\r\nwxyz\r\n0\r\n\r\n")
    assert isinstance(got[1], memoryview) and bytes(got[1]) == b"wxyz"
    assert decoder.state == "FINISHED"


def test_one_read_is_one_batch():
    singles, batches = [], []
    decoder = ViewChunkedDecoder(singles.append, lambda rest: None)
    decoder.batchCallback = batches.append
    decoder.dataReceived(b"3\r\nabc\r\n2\r\nde\r\n1\r\nf")
    assert singles == [] and [[bytes(p) for p in b] for b in batches] == [[b"abc", b"de", b"f"]]
    decoder.dataReceived(b"\r\n0\r\n\r\n")
    assert decoder.state == "FINISHED"
