# mypy: disable-error-code="arg-type,assignment,call-overload,func-returns-value,override"
"""HTTP/2 clients for the h2 tests (tests/test_h2_*.py), on the global reactor.

- :class:`H2Client`: a client on the sans-IO ``h2`` library
  (``H2Connection(H2Configuration(client_side=True, header_encoding=None))``)
  over a real socket, cleartext with prior knowledge or TLS with ALPN ``h2``.
  One connection carries any number of streams (GET, PUT and POST at once);
  request bodies are sent as the peer's windows allow; each :class:`Stream`
  collects status, headers, body (or its sha256), END_STREAM, RST_STREAM.
  With ``auto_ack=False`` it never reopens its receive windows (a receiver
  that takes nothing), until :meth:`H2Client.ack` is called.
- :class:`RawH2`: raw frames (hyperframe, hpack) for what a well-behaved
  client never sends: floods, too many streams, oversized header lists. It
  parses what the server sends back frame by frame and keeps GOAWAY,
  RST_STREAM, statuses and bodies.

Both are Twisted protocols: nothing here blocks the reactor the in-process
server runs on.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Sequence, Tuple

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from twisted.internet import defer, reactor
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    TCP4ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.protocol import Protocol

from helpers import sleep, wait_for, with_timeout

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

Headers = List[Tuple[str, str]]


def _str(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("latin-1")


def _split(headers: Iterable[Tuple[Any, Any]]) -> Tuple[Dict[str, str], Headers]:
    pseudo: Dict[str, str] = {}
    regular: Headers = []
    for name, value in headers:
        n, v = _str(name), _str(value)
        if n.startswith(":"):
            pseudo[n] = v
        else:
            regular.append((n, v))
    return pseudo, regular


def _fire(d: defer.Deferred, result: Any) -> None:
    if not d.called:
        d.callback(result)


# ---------------------------------------------------------------- responses


class Response:
    """What came back on one stream: status, headers in wire order (names as
    sent, so lower-case is checked, not assumed), body, and how it ended."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.status: Optional[int] = None
        self.headers: Headers = []
        self.informational: List[Tuple[int, Headers]] = []
        self.trailers: Headers = []
        self.body = bytearray()
        self.nbytes = 0
        self._sha = hashlib.sha256()
        #: END_STREAM seen from the server.
        self.ended = False
        #: The error code of a RST_STREAM from the server.
        self.reset: Optional[int] = None
        #: The connection went away before the stream ended.
        self.lost = False
        self.done: defer.Deferred = defer.Deferred()

    # collecting
    def got_headers(self, headers: Iterable[Tuple[Any, Any]]) -> None:
        pseudo, regular = _split(headers)
        self.status = int(pseudo[":status"])
        self.headers = regular

    def got_data(self, data: bytes) -> None:
        self.nbytes += len(data)
        self._sha.update(data)
        if self.keep:
            self.body += data

    def finish(self) -> None:
        _fire(self.done, self)

    # use
    @property
    def finished(self) -> bool:
        return self.ended or self.reset is not None or self.lost

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def lines(self) -> List[str]:
        return self.text.splitlines()

    def values(self, name: str) -> List[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def one(self, name: str) -> Optional[str]:
        values = self.values(name)
        assert len(values) <= 1, (name, values)
        return values[0] if values else None

    def names(self) -> List[str]:
        return [n for n, _ in self.headers]

    def wait(self, timeout: float = 15.0, what: str = "") -> defer.Deferred:
        """Fires with self once the stream ended, was reset, or was lost."""
        if self.finished:
            return defer.succeed(self)
        d: defer.Deferred = defer.Deferred()
        self.done.addBoth(lambda r: (_fire(d, r), r)[1])
        return with_timeout(d, timeout, what or f"the end of {self.describe()}")

    def wait_bytes(self, nbytes: int, timeout: float = 15.0) -> defer.Deferred:
        return wait_for(
            lambda: self.nbytes >= nbytes or self.finished,
            timeout,
            what=f"{nbytes} bytes on {self.describe()}",
        )

    def describe(self) -> str:
        body = bytes(self.body[:300]) if self.keep else b"(not kept)"
        return (
            f"<stream status={self.status} ended={self.ended} reset={self.reset} "
            f"lost={self.lost} nbytes={self.nbytes} headers={self.headers} body={body!r}>"
        )


class Stream(Response):
    """A stream of :class:`H2Client`: the response, and the request body it
    sends as the windows allow."""

    def __init__(self, client: "H2Client", stream_id: int, keep: bool = True) -> None:
        super().__init__(keep)
        self.client = client
        self.id = stream_id
        #: Request body bytes handed to h2 (sent as DATA).
        self.sent = 0
        self._pending: Deque[memoryview] = deque()
        self.pending = 0
        self._end = False
        #: We sent END_STREAM.
        self.end_sent = False
        #: We sent RST_STREAM (its error code).
        self.reset_sent: Optional[int] = None
        #: Received bytes not yet given back to the server's window.
        self.unacked = 0

    # sending
    def send(self, data: bytes) -> None:
        if data:
            self._pending.append(memoryview(data))
            self.pending += len(data)
        self.client.pump()

    def end(self) -> None:
        self._end = True
        self.client.pump()

    def send_all(self, data: bytes) -> None:
        self.send(data)
        self.end()

    def reset_stream(self, code: int = ErrorCodes.CANCEL) -> None:
        self.client.reset(self, code)

    @property
    def blocked(self) -> bool:
        """Body bytes wait and the stream or connection window is shut."""
        return self.pending > 0 and self.client.window(self) == 0

    def describe(self) -> str:
        return f"stream {self.id} " + super().describe()[1:-1] + f" sent={self.sent}"


# ---------------------------------------------------------------- the h2 client


class GracefulH2Connection(H2Connection):
    """h2's client connection, except that a GOAWAY with NO_ERROR does not
    close it: h2 4.4.1 moves to CLOSED on any GOAWAY and then refuses every
    later frame (DATA on the streams the GOAWAY lets finish, too), while
    RFC 9113 section 6.8 lets streams up to last_stream_id complete."""

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> Any:
        if frame.error_code != 0:
            return super()._receive_goaway_frame(frame)
        event = ConnectionTerminated()
        event.error_code = ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]



class _Closing:
    """Closing a test client's connection, and waiting for it to close."""

    transport: Any
    closed: defer.Deferred
    is_closed: bool

    def close(self) -> None:
        if not self.is_closed:
            self.transport.loseConnection()

    def abort(self) -> None:
        if not self.is_closed:
            self.transport.abortConnection()

    def wait_closed(self, timeout: float = 15.0, what: str = "the connection to close") -> defer.Deferred:
        if self.is_closed:
            return defer.succeed(self)
        d: defer.Deferred = defer.Deferred()
        self.closed.addBoth(lambda r: (_fire(d, r), r)[1])
        return with_timeout(d, timeout, what)


class H2Client(_Closing, Protocol):
    """An HTTP/2 client connection on ``h2``."""

    def __init__(
        self,
        authority: str = "127.0.0.1",
        scheme: str = "http",
        window: Optional[int] = None,
        auto_ack: bool = True,
        settings: Optional[Dict[int, int]] = None,
    ) -> None:
        self.authority = authority
        self.scheme = scheme
        self.auto_ack = auto_ack
        self.conn = GracefulH2Connection(H2Configuration(client_side=True, header_encoding=None))
        self._settings = dict(settings or {})
        if window is not None:
            self._settings[SettingCodes.INITIAL_WINDOW_SIZE] = window
        self.streams: Dict[int, Stream] = {}
        #: (error_code, last_stream_id, additional_data) of the server's GOAWAY.
        self.goaway: Optional[Tuple[int, int, bytes]] = None
        self.remote_settings: Dict[int, int] = {}
        self.settings_acked = False
        #: An h2 ProtocolError raised on what the server sent.
        self.protocol_error: Optional[Exception] = None
        #: ALPN result on TLS (None on cleartext).
        self.alpn: Optional[bytes] = None
        self.is_closed = False
        self.reason: Any = None
        self.closed: defer.Deferred = defer.Deferred()
        self.ready: defer.Deferred = defer.Deferred()

    # Protocol
    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        if self._settings:
            self.conn.update_settings(self._settings)
        self.flush()

    def dataReceived(self, data: bytes) -> None:
        if self.alpn is None:
            self.alpn = getattr(self.transport, "negotiatedProtocol", None)
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as e:
            self.protocol_error = e
            self.flush()
            self.transport.loseConnection()
            return
        for event in events:
            self._event(event)
        self.pump()

    def connectionLost(self, reason: Any) -> None:
        self.is_closed = True
        self.reason = reason
        for stream in list(self.streams.values()):
            if not stream.finished:
                stream.lost = True
                stream.finish()
        _fire(self.closed, self)

    def _event(self, event: Any) -> None:
        stream = self.streams.get(getattr(event, "stream_id", None) or 0)
        if isinstance(event, ResponseReceived) and stream:
            stream.got_headers(event.headers)
        elif isinstance(event, InformationalResponseReceived) and stream:
            pseudo, regular = _split(event.headers)
            stream.informational.append((int(pseudo[":status"]), regular))
        elif isinstance(event, TrailersReceived) and stream:
            stream.trailers = _split(event.headers)[1]
        elif isinstance(event, DataReceived):
            if stream:
                stream.got_data(event.data)
            if self.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif stream:
                stream.unacked += event.flow_controlled_length
        elif isinstance(event, StreamEnded) and stream:
            stream.ended = True
            stream.finish()
        elif isinstance(event, StreamReset) and stream:
            if event.remote_reset:
                stream.reset = event.error_code
            stream.finish()
        elif isinstance(event, ConnectionTerminated):
            self.goaway = (
                int(event.error_code),
                event.last_stream_id,
                event.additional_data or b"",
            )
        elif isinstance(event, RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.remote_settings[int(code)] = change.new_value
            _fire(self.ready, self)
        elif isinstance(event, SettingsAcknowledged):
            self.settings_acked = True
        elif isinstance(event, WindowUpdated):
            pass  # pump() runs after every batch of events

    # sending
    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.is_closed:
            self.transport.write(data)

    def window(self, stream: Stream) -> int:
        try:
            return self.conn.local_flow_control_window(stream.id)
        except Exception:
            return 0

    def pump(self) -> None:
        """Send what the streams have, as far as the windows allow."""
        if self.is_closed or self.conn.state_machine.state.name == "CLOSED":
            return
        for stream in list(self.streams.values()):
            if stream.reset_sent is not None or stream.end_sent or stream.finished and stream.reset is not None:
                continue
            try:
                while stream._pending:
                    room = min(self.window(stream), self.conn.max_outbound_frame_size)
                    if room <= 0:
                        break
                    head = stream._pending[0]
                    piece = head[:room]
                    self.conn.send_data(stream.id, piece.tobytes())
                    stream.sent += len(piece)
                    stream.pending -= len(piece)
                    if len(piece) == len(head):
                        stream._pending.popleft()
                    else:
                        stream._pending[0] = head[len(piece):]
                if not stream._pending and stream._end and not stream.end_sent:
                    self.conn.end_stream(stream.id)
                    stream.end_sent = True
            except ProtocolError:
                # The stream was closed meanwhile (reset by the server).
                continue
        self.flush()

    def request(
        self,
        method: str,
        path: str,
        headers: Sequence[Tuple[str, str]] = (),
        body: Optional[bytes] = None,
        end: Optional[bool] = None,
        keep: bool = True,
        authority: Optional[str] = None,
    ) -> Stream:
        """Open a stream. ``body`` is sent (and the stream ended, unless
        ``end`` is False); without a body, the stream ends with its HEADERS
        unless ``end`` is False (then send()/end() it later)."""
        stream_id = self.conn.get_next_available_stream_id()
        stream = Stream(self, stream_id, keep)
        self.streams[stream_id] = stream
        fields = [
            (b":method", _bytes(method)),
            (b":scheme", _bytes(self.scheme)),
            (b":authority", _bytes(authority or self.authority)),
            (b":path", _bytes(path)),
        ] + [(_bytes(n), _bytes(v)) for n, v in headers]
        end_with_headers = body is None and end is not False
        self.conn.send_headers(stream_id, fields, end_stream=end_with_headers)
        stream.end_sent = end_with_headers
        self.flush()
        if body is not None:
            stream.send(body)
            if end is not False:
                stream.end()
        return stream

    def get(self, path: str, **kw: Any) -> Stream:
        return self.request("GET", path, **kw)

    def put(self, path: str, body: Optional[bytes] = None, **kw: Any) -> Stream:
        return self.request("PUT", path, body=body, **kw)

    def reset(self, stream: Stream, code: int = ErrorCodes.CANCEL) -> None:
        stream.reset_sent = code
        self.conn.reset_stream(stream.id, code)
        self.flush()

    def ack(self, stream: Optional[Stream] = None) -> None:
        """Give back to the server what it sent (all streams by default), and
        from now on acknowledge data as it comes."""
        self.auto_ack = True
        for s in [stream] if stream else list(self.streams.values()):
            if s.unacked:
                try:
                    self.conn.acknowledge_received_data(s.unacked, s.id)
                except ProtocolError:
                    pass
                s.unacked = 0
        self.flush()


    def wait_goaway(self, timeout: float = 15.0) -> defer.Deferred:
        return wait_for(lambda: self.goaway is not None, timeout, what="a GOAWAY")


# ---------------------------------------------------------------- connecting


def _connect(endpoint: Any, protocol: Protocol, ready: bool = True) -> defer.Deferred:
    d = connectProtocol(endpoint, protocol)
    if ready:
        # The server's SETTINGS arrived: it speaks h2 on this connection.
        d.addCallback(
            lambda p: with_timeout(p.ready, 10, "the server's SETTINGS").addCallback(lambda _: p)
        )
    return d


def _tcp(port: int, source: Optional[str] = None) -> TCP4ClientEndpoint:
    """127.0.0.1:``port``, from the loopback address ``source`` (another
    client, e.g. 127.0.0.2) if given."""
    bind = (source, 0) if source is not None else None
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10, bindAddress=bind)


def h2c(port: int, ready: bool = True, source: Optional[str] = None, **kw: Any) -> defer.Deferred:
    """An :class:`H2Client` on 127.0.0.1:``port`` with prior knowledge."""
    client = H2Client(authority=f"127.0.0.1:{port}", **kw)
    return _connect(_tcp(port, source), client, ready)


def h2unix(path: str, ready: bool = True, **kw: Any) -> defer.Deferred:
    client = H2Client(authority="pipe", **kw)
    return _connect(UNIXClientEndpoint(reactor, path, timeout=10), client, ready)


def tls_options(cert_path: str, protocols: Sequence[bytes] = (b"h2",)) -> Any:
    from twisted.internet.ssl import Certificate, optionsForClientTLS

    with open(cert_path, "rb") as f:
        trust = Certificate.loadPEM(f.read())
    return optionsForClientTLS("localhost", trustRoot=trust, acceptableProtocols=list(protocols))


def h2tls(port: int, cert_path: str, ready: bool = True, **kw: Any) -> defer.Deferred:
    """An :class:`H2Client` over TLS to 127.0.0.1:``port`` offering ALPN h2
    only (``client.alpn`` says what was chosen)."""
    client = H2Client(authority=f"localhost:{port}", scheme="https", **kw)
    endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port, tls_options(cert_path), timeout=10)
    return _connect(endpoint, client, ready)


# ---------------------------------------------------------------- raw frames


def headers_block(
    encoder: Encoder,
    path: str,
    method: str = "GET",
    authority: str = "127.0.0.1",
    extra: Sequence[Tuple[str, str]] = (),
) -> bytes:
    # No Huffman coding: hpack's pure-Python coder takes a minute for 1 MB.
    return encoder.encode(
        [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path),
         *extra],
        huffman=False,
    )


def frame_bytes(frames: Iterable[Frame]) -> bytes:
    return b"".join(f.serialize() for f in frames)


def headers_frame(stream_id: int, block: bytes, end_stream: bool = True, end_headers: bool = True) -> HeadersFrame:
    flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
    return HeadersFrame(stream_id, block, flags=flags)


def continuation_frame(stream_id: int, block: bytes, end_headers: bool = False) -> ContinuationFrame:
    return ContinuationFrame(stream_id, block, flags=["END_HEADERS"] if end_headers else [])


def rst_frame(stream_id: int, code: int = ErrorCodes.CANCEL) -> RstStreamFrame:
    return RstStreamFrame(stream_id, error_code=int(code))


def settings_frame(settings: Optional[Dict[int, int]] = None, ack: bool = False) -> SettingsFrame:
    if ack:
        return SettingsFrame(0, flags=["ACK"])
    return SettingsFrame(0, settings={int(k): v for k, v in (settings or {}).items()})


def ping_frame(payload: bytes = b"12345678") -> PingFrame:
    return PingFrame(0, opaque_data=payload)


def data_frame(stream_id: int, data: bytes = b"", end_stream: bool = False) -> DataFrame:
    return DataFrame(stream_id, data, flags=["END_STREAM"] if end_stream else [])


class RawH2(_Closing, Protocol):
    """Raw frames both ways. Sends the preface and an empty SETTINGS at
    once; ACKs the server's SETTINGS (``ack_settings``) so that its limits
    are in force; records every frame the server sends."""

    def __init__(self, ack_settings: bool = True, settings: Optional[Dict[int, int]] = None) -> None:
        self.ack_settings = ack_settings
        self._settings = settings or {}
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.buffer = bytearray()
        self.counts: Dict[str, int] = {}
        self.goaway: Optional[Tuple[int, int, bytes]] = None
        self.resets: Dict[int, int] = {}
        self.responses: Dict[int, Response] = {}
        self.server_settings: Dict[int, int] = {}
        self.window_updates: Dict[int, int] = {}
        self._block: Optional[Tuple[int, bytearray, bool]] = None
        self.bad: Optional[str] = None
        self.is_closed = False
        self.reason: Any = None
        self.closed: defer.Deferred = defer.Deferred()
        self.ready: defer.Deferred = defer.Deferred()
        self.received = 0
        self.written = 0

    # Protocol
    def connectionMade(self) -> None:
        self.write(PREFACE + settings_frame(self._settings).serialize())

    def connectionLost(self, reason: Any) -> None:
        self.is_closed = True
        self.reason = reason
        _fire(self.closed, self)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.buffer += data
        while len(self.buffer) >= 9:
            try:
                frame, length = Frame.parse_frame_header(memoryview(bytes(self.buffer[:9])))
            except Exception as e:  # an unparseable frame header from the server
                self.bad = f"bad frame header {bytes(self.buffer[:9])!r}: {e}"
                self.buffer.clear()
                return
            if len(self.buffer) < 9 + length:
                return
            body = bytes(self.buffer[9 : 9 + length])
            del self.buffer[: 9 + length]
            frame.parse_body(memoryview(body))
            self._frame(frame)

    def _frame(self, frame: Frame) -> None:
        name = type(frame).__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        if isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                self.server_settings.update(frame.settings)
                if self.ack_settings:
                    self.write(settings_frame(ack=True).serialize())
                _fire(self.ready, self)
        elif isinstance(frame, GoAwayFrame):
            self.goaway = (frame.error_code, frame.last_stream_id, frame.additional_data)
        elif isinstance(frame, RstStreamFrame):
            self.resets[frame.stream_id] = frame.error_code
            self.response(frame.stream_id).reset = frame.error_code
            self.response(frame.stream_id).finish()
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            if isinstance(frame, HeadersFrame):
                self._block = (frame.stream_id, bytearray(frame.data), "END_STREAM" in frame.flags)
            elif self._block is not None:
                self._block[1].extend(frame.data)
            if "END_HEADERS" in frame.flags and self._block is not None:
                stream_id, block, end = self._block
                self._block = None
                headers = self.decoder.decode(bytes(block), raw=True)
                response = self.response(stream_id)
                pseudo, regular = _split(headers)
                status = int(pseudo.get(":status", "0"))
                if 100 <= status < 200:
                    response.informational.append((status, regular))
                elif response.status is None:
                    response.got_headers(headers)
                else:
                    response.trailers = regular
                if end:
                    response.ended = True
                    response.finish()
        elif isinstance(frame, DataFrame):
            response = self.response(frame.stream_id)
            response.got_data(frame.data)
            if "END_STREAM" in frame.flags:
                response.ended = True
                response.finish()
        elif isinstance(frame, WindowUpdateFrame):
            self.window_updates[frame.stream_id] = (
                self.window_updates.get(frame.stream_id, 0) + frame.window_increment
            )

    # use
    def response(self, stream_id: int) -> Response:
        if stream_id not in self.responses:
            self.responses[stream_id] = Response()
        return self.responses[stream_id]

    def write(self, data: bytes) -> None:
        if not self.is_closed:
            self.written += len(data)
            self.transport.write(data)

    def send(self, *frames: Frame) -> None:
        self.write(frame_bytes(frames))

    def request(
        self,
        stream_id: int,
        path: str,
        method: str = "GET",
        end_stream: bool = True,
        extra: Sequence[Tuple[str, str]] = (),
    ) -> Response:
        block = headers_block(self.encoder, path, method, extra=extra)
        self.send(headers_frame(stream_id, block, end_stream=end_stream))
        return self.response(stream_id)

    @property
    def ended(self) -> bool:
        """The server said GOAWAY or closed the connection."""
        return self.goaway is not None or self.is_closed

    def unread(self) -> int:
        """What we wrote that the server has not read yet, as far as this
        side's user-space buffer shows it."""
        from pipeserver.http.fastpath import buffered_bytes

        return buffered_bytes(self.transport) if not self.is_closed else 0



def raw_h2c(port: int, ready: bool = True, source: Optional[str] = None, **kw: Any) -> defer.Deferred:
    """A :class:`RawH2` on 127.0.0.1:``port``; fires once the server's
    SETTINGS came (and were ACKed), unless ``ready`` is False."""
    return _connect(_tcp(port, source), RawH2(**kw), ready)


def raw_h2tls(port: int, cert_path: str, ready: bool = True, **kw: Any) -> defer.Deferred:
    """A :class:`RawH2` over TLS (ALPN h2) to 127.0.0.1:``port``."""
    endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port, tls_options(cert_path), timeout=10)
    return _connect(endpoint, RawH2(**kw), ready)


@defer.inlineCallbacks
def flood(
    client: RawH2,
    batch: Callable[[int], bytes],
    batches: int,
    max_unread: int = 4 * 1024 * 1024,
):
    """Write ``batch(i)`` for i in range(batches), one per reactor turn,
    until the server ends the connection (GOAWAY or close). Waits while more
    than ``max_unread`` bytes sit unsent on this side (the server stopped
    reading). Returns how many batches were written."""
    written = 0
    for i in range(batches):
        if client.ended:
            break
        while client.unread() > max_unread and not client.ended:
            yield sleep(0.01)
        if client.ended:
            break
        client.write(batch(i))
        written += 1
        yield sleep(0)
    return written


# ---------------------------------------------------------------- fixtures


class Clients:
    """Every h2 connection a test opens, aborted at teardown if still open."""

    def __init__(self) -> None:
        self.all: List[Any] = []

    def add(self, client: Any) -> Any:
        self.all.append(client)
        return client

    @defer.inlineCallbacks
    def h2c(self, port: int, **kw: Any):
        client = yield h2c(port, **kw)
        return self.add(client)

    @defer.inlineCallbacks
    def h2tls(self, port: int, cert: str, **kw: Any):
        client = yield h2tls(port, cert, **kw)
        return self.add(client)

    @defer.inlineCallbacks
    def h2unix(self, path: str, **kw: Any):
        client = yield h2unix(path, **kw)
        return self.add(client)

    @defer.inlineCallbacks
    def raw(self, port: int, **kw: Any):
        client = yield raw_h2c(port, **kw)
        return self.add(client)

    @defer.inlineCallbacks
    def raw_tls(self, port: int, cert: str, **kw: Any):
        client = yield raw_h2tls(port, cert, **kw)
        return self.add(client)

    @defer.inlineCallbacks
    def cleanup(self):
        for client in self.all:
            if not client.is_closed:
                client.abort()
        for client in self.all:
            try:
                yield client.wait_closed(5)
            except AssertionError:
                pass


@pytest.fixture
def h2clients():
    import pytest_twisted

    clients = Clients()
    yield clients
    pytest_twisted.blockon(clients.cleanup())
