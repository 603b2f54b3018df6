"""What a server wrote on one connection, split into HTTP responses.

The one parser of the unit tests (tests/unit_support.py, bytes from a
StringTransport) and of the raw-socket tests (tests/abuse_support.py). It is
strict: anything that is not well-formed HTTP/1.x fails the test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

CRLF = b"\r\n"


@dataclass
class Response:
    status: int
    reason: bytes
    headers: List[Tuple[bytes, bytes]]
    body: bytes = b""
    #: The response ended properly: the last chunk, or all of Content-Length.
    complete: bool = False
    chunked: bool = False
    #: Wire bytes of the body as sent (chunk framing included).
    raw: bytes = b""
    version: bytes = b"HTTP/1.1"
    status_line: bytes = b""

    def header(self, name: bytes) -> Optional[bytes]:
        values = self.headerValues(name)
        assert len(values) <= 1, (name, values)
        return values[0] if values else None

    def headerValues(self, name: bytes) -> List[bytes]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def headerNames(self) -> List[bytes]:
        return [k.lower() for k, _ in self.headers]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    @property
    def lines(self) -> List[str]:
        return self.text.splitlines()


def parse_responses(
    data: bytes, head: bool = False, versions: Sequence[bytes] = (b"HTTP/1.1",)
) -> List[Response]:
    """Split what the server wrote on one connection into responses.

    An unfinished last response is returned with ``complete`` False; a
    chunked body that stops mid-chunk keeps the bytes that did arrive.
    Anything malformed, or a status line of another version than
    ``versions``, fails the test.
    """
    responses: List[Response] = []
    while data:
        end = data.find(CRLF + CRLF)
        assert end >= 0, f"unterminated response head: {data!r}"
        head_lines = data[:end].split(CRLF)
        data = data[end + 4 :]
        version, status, reason = (head_lines[0].split(b" ", 2) + [b""])[:3]
        assert version in versions, head_lines[0]
        headers = []
        for line in head_lines[1:]:
            name, sep, value = line.partition(b":")
            assert sep and name and name == name.strip(), f"bad header line {line!r}"
            headers.append((name, value.strip()))
        response = Response(
            int(status), reason, headers, version=version, status_line=head_lines[0]
        )
        responses.append(response)
        code = response.status
        if 100 <= code < 200:
            response.complete = True
            continue
        if head or code in (204, 304):
            response.complete = True
            continue
        encoding = response.header(b"transfer-encoding")
        length = response.header(b"content-length")
        start = data
        if encoding is not None:
            assert encoding.lower() == b"chunked", encoding
            assert length is None, "both chunked and Content-Length"
            response.chunked = True
            body = []
            while True:
                line_end = data.find(CRLF)
                if line_end < 0:
                    data = b""
                    break
                size = int(data[:line_end].split(b";")[0], 16)
                chunk = data[line_end + 2 : line_end + 2 + size]
                body.append(chunk)
                if len(chunk) < size:
                    data = b""
                    break
                rest = data[line_end + 2 + size :]
                if len(rest) < 2:
                    data = b""
                    break
                assert rest.startswith(CRLF), f"bad chunk end: {rest!r}"
                data = rest[2:]
                if size == 0:
                    response.complete = True
                    break
            response.body = b"".join(body)
        elif length is not None:
            n = int(length)
            response.body = data[:n]
            response.complete = len(response.body) == n
            data = data[n:]
        else:
            # Delimited by the close of the connection.
            response.body, data = data, b""
        response.raw = start[: len(start) - len(data)]
    return responses
