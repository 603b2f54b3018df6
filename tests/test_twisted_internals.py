# mypy: disable-error-code="arg-type,assignment,attr-defined,comparison-overlap,func-returns-value,method-assign,misc,union-attr,unused-ignore"
"""Guards for the Twisted internals pipeserver relies on (see pipeserver/http/_twisted.py).

The streaming request path overrides hooks Twisted documents as "not
intended for users" and reads private channel attributes, all of them
through pipeserver/http/_twisted.py, which checks them at import. If a Twisted
upgrade changes any of them, a test here fails before users notice. The
supported range is in setup.cfg, and CI (noxfile.py) runs this file on the
lowest and the newest Twisted in it; widen it only after these pass on both.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import inspect
import io
import operator
import re
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

import pytest
from twisted.internet import abstract
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.web import http, resource, server
from zope.interface import implementer

from pipeserver.http1.channel import PipeChannel
from pipeserver.http.request import PipeRequest
from pipeserver.web.site import PipeSite
from unit_support import Env, chunk, env, make_site, request  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------ a recording channel
class Recorder:
    def __init__(self) -> None:
        self.events: List[Tuple] = []


class RecordingRequest(http.Request):
    """Records the hooks the channel calls, and what was on the wire then."""

    recorder: Recorder

    def gotLength(self, length):
        self.recorder.events.append(("gotLength", length, self.channel.transport.value()))
        super().gotLength(length)

    def handleContentChunk(self, data):
        self.recorder.events.append(("chunk", data))
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        self.recorder.events.append(("requestReceived", command, path, version))
        super().requestReceived(command, path, version)

    def process(self):
        self.setResponseCode(204)
        self.finish()


class RecordingChannel(http.HTTPChannel):
    recorder: Recorder

    def allHeadersReceived(self):
        super().allHeadersReceived()
        self.recorder.events.append(
            (
                "allHeadersReceived",
                self._command,
                self._path,
                self._version,
                self.length,
                self.transport.value(),
            )
        )


def recording_channel() -> Tuple[RecordingChannel, StringTransport, Recorder]:
    recorder = Recorder()

    class Req(RecordingRequest):
        pass

    Req.recorder = recorder
    channel = RecordingChannel()
    channel.recorder = recorder
    channel.requestFactory = Req
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport, recorder


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


# ------------------------------------------------------------ allHeadersReceived
def test_allHeadersReceived_calls_gotLength_then_sends_100_continue() -> None:
    channel, transport, recorder = recording_channel()
    channel.dataReceived(
        b"PUT /p?n=2 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5\r\n\r\n"
    )
    got, headers = recorder.events
    # gotLength ran inside allHeadersReceived, before the 100 Continue...
    assert got == ("gotLength", 5, b"")
    # ...which was on the wire when allHeadersReceived returned, with the
    # private request-line attributes still set.
    assert headers == ("allHeadersReceived", b"PUT", b"/p?n=2", b"HTTP/1.1", 5, CONTINUE)
    assert transport.value() == CONTINUE


def test_allHeadersReceived_chunked_length_is_None() -> None:
    channel, transport, recorder = recording_channel()
    channel.dataReceived(
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert recorder.events[0] == ("gotLength", None, b"")
    assert recorder.events[1][:5] == ("allHeadersReceived", b"POST", b"/p", b"HTTP/1.1", None)


def test_no_100_continue_for_http10() -> None:
    channel, transport, recorder = recording_channel()
    channel.dataReceived(
        b"PUT /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    )
    assert transport.value() == b""


def test_private_request_line_attributes_are_gone_after_the_body() -> None:
    """They exist only between the request line and the end of the body,
    so PipeChannel must read them in allHeadersReceived."""
    channel, transport, recorder = recording_channel()
    channel.dataReceived(b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
    assert (channel._command, channel._path, channel._version) == (b"PUT", b"/p", b"HTTP/1.1")
    channel.dataReceived(b"ab")
    assert not hasattr(channel, "_command")


# ------------------------------------------------------------ body decoders
def test_identity_decoder_calls_handleContentChunk_then_requestReceived() -> None:
    channel, transport, recorder = recording_channel()
    channel.dataReceived(b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab")
    decoder = channel._transferDecoder
    assert isinstance(decoder, http._IdentityTransferDecoder)
    # The decoder holds the request's bound handleContentChunk.
    assert decoder.dataCallback == channel.requests[-1].handleContentChunk
    channel.dataReceived(b"cd")
    channel.dataReceived(b"ef")
    assert [e[0] for e in recorder.events] == [
        "gotLength", "allHeadersReceived", "chunk", "chunk", "chunk", "requestReceived",
    ]
    assert [e[1] for e in recorder.events if e[0] == "chunk"] == [b"ab", b"cd", b"ef"]
    assert recorder.events[-1] == ("requestReceived", b"PUT", b"/p", b"HTTP/1.1")


def test_chunked_decoder_calls_handleContentChunk_then_requestReceived() -> None:
    channel, transport, recorder = recording_channel()
    channel.dataReceived(
        b"POST /q?x=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    decoder = channel._transferDecoder
    assert isinstance(decoder, http._ChunkedTransferDecoder)
    assert decoder.dataCallback == channel.requests[-1].handleContentChunk
    channel.dataReceived(b"3\r\nabc\r\n")
    assert recorder.events[-1] == ("chunk", b"abc")
    channel.dataReceived(b"2\r\nde\r\n0\r\n\r\n")
    assert [e for e in recorder.events if e[0] == "chunk"] == [("chunk", b"abc"), ("chunk", b"de")]
    assert recorder.events[-1] == ("requestReceived", b"POST", b"/q?x=1", b"HTTP/1.1")


def test_decoder_classes_call_back_directly() -> None:
    got: List[bytes] = []
    ended: List[bytes] = []
    identity = http._IdentityTransferDecoder(5, got.append, ended.append)
    identity.dataReceived(b"hel")
    identity.dataReceived(b"lo+extra")
    assert got == [b"hel", b"lo"] and ended == [b"+extra"]
    got.clear(), ended.clear()
    chunked = http._ChunkedTransferDecoder(got.append, ended.append)
    chunked.dataReceived(b"4\r\nwiki\r\n0\r\n\r\nNEXT")
    assert got == [b"wiki"] and ended == [b"NEXT"]


# ------------------------------------------------------------ timeouts
def test_setTimeout_and_savedTimeOut() -> None:
    assert "_savedTimeOut" in vars(http.HTTPChannel)
    assert http.HTTPChannel._savedTimeOut is None
    channel = http.HTTPChannel()
    channel.timeOut = 60
    channel.callLater = lambda *a, **k: _FakeCall()  # type: ignore[assignment]
    assert channel.setTimeout(None) == 60
    assert channel.timeOut is None
    assert channel.setTimeout(30) is None
    assert channel.timeOut == 30


class _FakeCall:
    def active(self) -> bool:
        return True

    def cancel(self) -> None:
        pass

    def reset(self, delay: float) -> None:
        pass


def test_requestDone_restores_savedTimeOut(env: Env) -> None:
    """PipeChannel turns the idle timeout off for a streamed upload by setting
    ``_savedTimeOut``; Twisted's requestDone must put it back."""
    receiver = env.client().send(request(b"GET", b"/p"))
    sender = env.client().send(request(b"PUT", b"/p", chunked=True) + chunk(b"x"))
    assert sender.proto.timeOut is None
    assert sender.proto._savedTimeOut == 60
    sender.send(chunk(b""))
    assert sender.proto.timeOut == 60
    assert receiver.response().body == b"x"


# ------------------------------------------------------------ other names used
def test_channel_names_pipeserver_uses_exist() -> None:
    channel_attrs = [
        "requests", "length", "timeOut", "abortTimeout", "maxHeaders", "totalHeadersSize",
        "_receivedHeaderCount", "_receivedHeaderSize", "_transferDecoder",
        "_respondToBadRequestAndDisconnect", "_networkProducer", "forceAbortClient",
        "_abortingCall", "lineLengthExceeded", "line_mode", "MAX_LENGTH",
        "allContentReceived", "requestDone", "checkPersistence", "_send100Continue",
    ]
    channel = http.HTTPChannel()
    channel.makeConnection(StringTransport())
    missing = [name for name in channel_attrs if not hasattr(channel, name)]
    assert missing == []
    for name in ("gotLength", "handleContentChunk", "requestReceived", "process",
                 "connectionLost", "finish", "notifyFinish", "registerProducer",
                 "unregisterProducer", "sentLength", "producer", "defaultContentType"):
        assert hasattr(server.Request, name) or name in ("sentLength", "producer"), name
    # The signatures the subclasses override.
    assert list(inspect.signature(http.Request.requestReceived).parameters) == [
        "self", "command", "path", "version"]
    assert list(inspect.signature(http.Request.gotLength).parameters) == ["self", "length"]
    assert list(inspect.signature(http.Request.handleContentChunk).parameters) == [
        "self", "data"]


class _RecordingDescriptor(abstract.FileDescriptor):
    """A transport whose socket takes every byte it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.connected = True
        self.sent = b""

    def writeSomeData(self, data: bytes) -> int:
        self.sent += bytes(data)
        return len(data)

    def startWriting(self) -> None:
        pass

    def stopWriting(self) -> None:
        pass


def test_transport_buffer_attributes_for_bytesHeld() -> None:
    """pipe.Download reads a TCP transport's user-space write buffer
    (``dataBuffer``/``offset``/``_tempDataBuffer``/``_tempDataLen``), and
    ``_flushHead`` sends its head itself, leaving in ``_tempDataBuffer`` only
    what the socket did not take. Were the names to change, that assignment
    would do nothing and the head would go out twice."""
    transport = _RecordingDescriptor()
    assert (transport.dataBuffer, transport.offset) == (b"", 0)
    transport.write(b"HTTP/1.1 200 OK\r\n")
    transport.write(b"\r\n")
    assert transport._tempDataBuffer == [b"HTTP/1.1 200 OK\r\n", b"\r\n"]
    assert transport._tempDataLen == 19
    # What _flushHead does once the socket took the first 9 bytes itself.
    rest = b"".join(transport._tempDataBuffer)[9:]
    transport._tempDataBuffer = [rest]
    transport._tempDataLen = len(rest)
    transport.write(b"body")
    transport.doWrite()
    assert transport.sent == b"200 OK\r\n\r\nbody"
    assert transport._tempDataBuffer == [] and transport._tempDataLen == 0
    assert (transport.dataBuffer, transport.offset) == (b"", 0)


def test_channel_passes_pause_and_resume_to_the_request_producer() -> None:
    """A receiver's transport pauses the channel; the channel must pause the
    producer registered on the request (pipe.Download)."""

    @implementer(IPushProducer)
    class Producer:
        def __init__(self) -> None:
            self.calls: List[str] = []

        def pauseProducing(self) -> None:
            self.calls.append("pause")

        def resumeProducing(self) -> None:
            self.calls.append("resume")

        def stopProducing(self) -> None:
            self.calls.append("stop")

    producer = Producer()

    class Res(resource.Resource):
        isLeaf = True

        def render_GET(self, req):
            req.registerProducer(producer, True)
            req.write(b"x")
            return server.NOT_DONE_YET

    site = server.Site(Res())
    site.protocol = http.HTTPChannel  # as PipeSite does: no h2 wrapper
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    channel.pauseProducing()
    channel.resumeProducing()
    channel.stopProducing()  # what the transport calls when it goes
    assert producer.calls == ["pause", "resume", "stop"]


# ------------------------------------------------------------ never to disk
@pytest.fixture
def no_tempfile(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """A test-only guard: any attempt to spool a body to disk raises."""
    calls: List[int] = []

    def refuse(*args, **kwargs):
        calls.append(1)
        raise AssertionError("a request body went to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", refuse)
    return calls


def test_stock_twisted_spools_chunked_bodies_to_tempfile(no_tempfile: List[int]) -> None:
    """The guard works: plain twisted.web does reach for a temporary file."""
    channel, transport, recorder = recording_channel()
    with pytest.raises(AssertionError, match="temporary file"):
        channel.dataReceived(
            b"PUT /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
    assert no_tempfile == [1]


@pytest.mark.parametrize("chunked", [True, False])
def test_streamed_body_never_touches_tempfile(env: Env, no_tempfile: List[int],
                                              chunked: bool) -> None:
    body = bytes(range(256)) * 1024  # 256 KiB: over Twisted's 100 000 spool limit
    receiver = env.client().send(request(b"GET", b"/p"))
    head = request(b"PUT", b"/p", body=None if chunked else body, chunked=chunked)
    if not chunked:
        head = head[: -len(body)]
    sender = env.client().send(head)
    upload = env.registry.pipes[("", b"/p")].sender
    req = upload.request
    assert isinstance(req, PipeRequest)
    assert isinstance(req.content, io.BytesIO)
    checked = 0
    for i in range(0, len(body), 16384):
        piece = body[i : i + 16384]
        sender.send(chunk(piece) if chunked else piece)
        if req.content is not None:  # None once the request is cleaned up
            assert req.content.getvalue() == b""
            checked += 1
    assert checked >= len(body) // 16384 - 1
    if chunked:
        sender.send(chunk(b""))
    assert receiver.response().body == body
    assert receiver.response().complete
    assert sender.response().lines[-1] == (
        "[INFO] All receiver(s) was/were received successfully.")
    assert no_tempfile == []


def test_pipe_site_uses_the_pipe_channel_and_request() -> None:
    assert PipeSite.protocol is PipeChannel
    assert PipeSite.requestFactory is PipeRequest


# ------------------------------------------------------------ the supported range
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
        "==": operator.eq, "!=": operator.ne}


def _version_tuple(text: str) -> Tuple[int, ...]:
    return tuple(int(re.match(r"\d+", part).group()) for part in text.split(".")
                 if re.match(r"\d+", part))


def _twisted_range() -> List[Tuple[str, str]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    for line in config["options"]["install_requires"].splitlines():
        match = re.match(r"\s*twisted\b(\[[^\]]*\])?\s*(.*)$", line, re.IGNORECASE)
        if match:
            specs = [s.strip() for s in match.group(2).split(",") if s.strip()]
            return [re.match(r"(>=|<=|==|!=|>|<)\s*(\S+)", s).groups() for s in specs]
    raise AssertionError("Twisted is not in install_requires")


def _within(version: Tuple[int, ...], specs: List[Tuple[str, str]]) -> bool:
    for op, bound in specs:
        b = _version_tuple(bound)
        width = max(len(b), len(version))
        left = version + (0,) * (width - len(version))
        right = b + (0,) * (width - len(b))
        if not _OPS[op](left, right):
            return False
    return True


def test_twisted_version_is_inside_the_supported_range() -> None:
    specs = _twisted_range()
    ops = {op for op, _ in specs}
    # A range with both ends: upgrades must be deliberate.
    assert ops & {"<", "<=", "=="} and ops & {">", ">=", "=="}, specs
    installed = importlib.metadata.version("Twisted")
    assert _within(_version_tuple(installed), specs), (installed, specs)


def _noxfile() -> dict:
    """noxfile.py's module-level constants (nox itself is not installed here)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    try:
                        found[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
    return found


def test_ci_tests_what_setup_cfg_claims() -> None:
    """python_requires, the classifiers and the Twisted range say what CI
    (noxfile.py) runs: every Python minor from the lowest, and the range's
    lowest and newest Twisted."""
    nox = _noxfile()
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    pythons = nox["PYTHONS"]
    minors = [int(p.split(".")[1]) for p in pythons]
    assert minors == list(range(minors[0], minors[0] + len(minors))), pythons
    assert minors[-1] >= 13, pythons
    assert config["options"]["python_requires"].strip() == f">={pythons[0]}"
    classified = re.findall(r"Programming Language :: Python :: (3\.\d+)\s*$",
                            config["metadata"]["classifiers"], re.MULTILINE)
    assert classified == pythons
    specs = _twisted_range()
    assert (">=", nox["TWISTED_LOWEST"]) in specs, specs
    for name in ("TWISTED_LOWEST", "TWISTED_MIDDLE", "TWISTED_NEWEST"):
        assert _within(_version_tuple(nox[name]), specs), (name, nox[name], specs)


def _h2_range() -> List[Tuple[str, str]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    for line in config["options"]["install_requires"].splitlines():
        match = re.match(r"\s*h2\s*([<>=!].*)$", line)
        if match:
            specs = [s.strip() for s in match.group(1).split(",") if s.strip()]
            return [re.match(r"(>=|<=|==|!=|>|<)\s*(\S+)", s).groups() for s in specs]
    raise AssertionError("h2 is not in install_requires")


def test_ci_tests_the_h2_range_setup_cfg_claims() -> None:
    """setup.cfg's h2 range starts at the lowest h2 CI (noxfile.py) runs,
    and holds the newest it runs, which is one the fast path was verified
    against (pipeserver/http2/_h2.py); the installed h2 is inside it."""
    from pipeserver.http2 import _h2

    nox = _noxfile()
    specs = _h2_range()
    lower = [bound for op, bound in specs if op == ">="]
    assert len(lower) == 1, specs
    padded = _version_tuple(lower[0]) + (0,) * 3
    assert padded[:3] == _version_tuple(nox["H2_LOWEST"])[:3], (lower, nox["H2_LOWEST"])
    for name in ("H2_LOWEST", "H2_NEWEST"):
        assert _within(_version_tuple(nox[name]), specs), (name, nox[name], specs)
    assert nox["H2_NEWEST"] in {h2 for h2, _ in _h2.VERIFIED}, _h2.VERIFIED
    assert _within(_version_tuple(importlib.metadata.version("h2")), specs)


# ------------------------------------------------------------ the body fast path
def test_body_fast_path_mirrors_the_stock_chain() -> None:
    """PipeChannel.dataReceived hands a body straight to the transfer
    decoder, doing what this chain does in raw mode with nothing buffered."""
    from twisted.protocols import basic

    assert "resetTimeout()" in inspect.getsource(http.HTTPChannel.dataReceived)
    line = inspect.getsource(basic.LineReceiver.dataReceived)
    for text in ("_busyReceiving", "self._buffer += data", "self.paused", "rawDataReceived(data)"):
        assert text in line, text
    raw = inspect.getsource(http.HTTPChannel.rawDataReceived)
    for text in (
        "if self._handlingRequest:",
        "self._transferDecoder.dataReceived(data)",
        "except _MalformedChunkedDataError:",
        "self._respondToBadRequestAndDisconnect()",
    ):
        assert text in raw, text
    channel = http.HTTPChannel()
    assert channel._buffer == b"" and channel._busyReceiving is False
    assert channel.paused is False and channel._handlingRequest is False
    assert channel._transferDecoder is None
    assert isinstance(http.maxChunkSizeLineLength, int)


# ------------------------------------------------------------ response framing
def _response_wire(*head: bytes) -> Tuple[http.Request, StringTransport]:
    channel = http.HTTPChannel()
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.requestFactory = http.Request  # process() is left to the test
    channel.dataReceived(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n")
    req = channel.requests[-1]
    for header in head:
        name, value = header.split(b": ")
        req.responseHeaders.setRawHeaders(name, [value])
    req.write(b"")
    return req, transport


def test_request_chunked_says_how_the_response_is_framed() -> None:
    """pipe.Download frames the bytes it sends past the transport itself,
    reading ``request.chunked``: it must be True exactly when Twisted frames
    the response in chunks, or a receiver would get unframed bytes in a
    chunked response (or the reverse)."""
    req, transport = _response_wire()
    assert req.chunked
    assert b"Transfer-Encoding: chunked\r\n" in transport.value()
    transport.clear()
    req.write(b"abc")
    assert transport.value() == b"3\r\nabc\r\n"

    req, transport = _response_wire(b"Content-Length: 3")
    assert not req.chunked
    assert b"Transfer-Encoding" not in transport.value()
    transport.clear()
    req.write(b"abc")
    assert transport.value() == b"abc"


# ------------------------------------------------------------ TLS
def test_tls_handshakes_from_one_context_all_complete() -> None:
    """Clients that ask for h2 or HTTP/1.1 by ALPN, three in turn, on one
    ssl: endpoint context, as curl and browsers do: every handshake completes,
    with h2 where ALPN is offered (PipeChannel hands the connection to
    http2.H2Channel at its first bytes).

    Twisted 25.5 sets a site's ALPN callback on that shared context at each
    connection, which pyOpenSSL 26.2+ refuses after the first ("Context has
    already been used"); PipeSite offers no ALPN there. Twisted 26 sets it
    once per context and fails a client whose protocols the site does not
    offer; PipeSite offers h2 and HTTP/1.1 there."""
    from twisted.internet import ssl
    from twisted.internet.interfaces import IHandshakeListener, IProtocolNegotiationFactory
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.task import Clock
    from twisted.protocols.tls import TLSMemoryBIOFactory
    from twisted.python.filepath import FilePath
    from twisted.test import iosim
    import twisted.test

    from pipeserver.http._twisted import _alpnSetPerConnection as _alpn_set_on_each_connection

    @implementer(IHandshakeListener)
    class Client(Protocol):
        negotiated: object = "no handshake"

        def handshakeCompleted(self) -> None:
            self.negotiated = self.transport.negotiatedProtocol

    site = PipeSite(resource.Resource(), reactor=Clock())
    per_connection = _alpn_set_on_each_connection()
    assert IProtocolNegotiationFactory.providedBy(site) is not per_connection
    pem = FilePath(twisted.test.__file__).sibling("server.pem").getContent()
    server_factory = TLSMemoryBIOFactory(
        ssl.PrivateCertificate.loadPEM(pem).options(), False, site)
    client_options = ssl.CertificateOptions(verify=False,
                                            acceptableProtocols=[b"h2", b"http/1.1"])
    client_factory = TLSMemoryBIOFactory(client_options, True, Factory.forProtocol(Client))
    negotiated = []
    for _ in range(3):
        server = server_factory.buildProtocol(None)
        client = client_factory.buildProtocol(None)
        pump = iosim.connect(server, iosim.FakeTransport(server, isServer=True),
                             client, iosim.FakeTransport(client, isServer=False))
        pump.flush()
        assert isinstance(server.wrappedProtocol, PipeChannel)
        negotiated.append(client.wrappedProtocol.negotiated)
        client.transport.loseConnection()
        pump.flush()
    assert negotiated == [None if per_connection else b"h2"] * 3
    assert list(site.channels) == [] and site.channels.accounts == {}


# ------------------------------------------------------------ header bytes
@pytest.mark.parametrize("header", [b"X-A: a\rSet-Cookie: evil=1", b"X-A: a\x00b"], ids=repr)
def test_pipe_channel_refuses_cr_and_nul_in_a_header(header: bytes) -> None:
    """Twisted 26 refuses NUL, CR and LF in a header value, 25.5 only NUL:
    PipeChannel refuses them itself, on every Twisted."""
    from twisted.internet.task import Clock

    site = PipeSite(resource.Resource(), reactor=Clock())
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /p HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert transport.disconnecting
    assert channel.requests == [] or channel.requests[-1].requestHeaders.getRawHeaders(
        b"x-a") is None


# ------------------------------------------------------------ a head refused
def test_bodiless_request_goes_from_allHeadersReceived_to_allContentReceived() -> None:
    """PipeChannel refuses a head in allHeadersReceived without calling
    super(); lineReceived then still calls allContentReceived for a request
    without a body, which PipeChannel must turn into a no-op."""
    calls: List[str] = []

    class Channel(http.HTTPChannel):
        def allHeadersReceived(self):
            calls.append("allHeadersReceived")

        def allContentReceived(self):
            calls.append("allContentReceived")

    channel = Channel()
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert calls == ["allHeadersReceived", "allContentReceived"]
    calls.clear()
    channel = Channel()
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
    assert calls == ["allHeadersReceived"] and not channel.line_mode


def test_refused_head_is_not_rendered(env: Env) -> None:
    client = env.client().send(b"GET /version HTTP/1.1\r\n\r\n")
    assert client.response().status == 400
    assert client.response().body == b"[ERROR] Malformed request.\n"


# ------------------------------------------------------------ a half-closed sender
def test_chunked_decoder_state_copies_with_its_buffer() -> None:
    """PipeChannel.bodyInKernel runs a copy of the live chunked decoder over
    peeked bytes: a shallow copy plus a fresh ``_buffer`` must be a decoder
    of its own, leaving the real one untouched."""
    from pipeserver.http._twisted import chunked_body_ends as _chunkedBodyEnds
    from pipeserver.http.chunked import ViewChunkedDecoder

    assert isinstance(http._ChunkedTransferDecoder(None, None)._buffer, bytearray)
    got: List[bytes] = []
    ended: List[bytes] = []
    decoder = ViewChunkedDecoder(lambda d: got.append(bytes(d)), ended.append)
    decoder.dataReceived(b"5\r\nab")
    decoder.dataReceived(b"c")
    assert not _chunkedBodyEnds(decoder, b"de\r\n")
    assert _chunkedBodyEnds(decoder, b"de\r\n0\r\n\r\n")
    assert not _chunkedBodyEnds(decoder, b"de\r\n0\r\nbroken")
    assert got == [b"ab", b"c"] and ended == []
    decoder.dataReceived(b"de\r\n1")
    assert decoder.state == "CHUNK_LENGTH" and bytes(decoder._buffer) == b"1"
    assert _chunkedBodyEnds(decoder, b"\r\nx\r\n0\r\n\r\n")
    decoder.dataReceived(b"\r\nx\r\n0\r\n\r\n")
    assert b"".join(got) == b"abcdex" and ended == [b""]


def test_tcp_transport_reports_a_fin_as_readConnectionLost() -> None:
    """What PipeChannel relies on to serve a sender that half-closes: a TCP
    transport whose protocol provides IHalfCloseableProtocol reports the
    peer's FIN as readConnectionLost, not connectionLost."""
    from twisted.internet import interfaces, tcp

    from pipeserver.http1.channel import PipeChannel

    assert interfaces.IHalfCloseableProtocol.providedBy(PipeChannel())
    assert interfaces.IHalfCloseableDescriptor.implementedBy(tcp.Connection)
    source = inspect.getsource(tcp.Connection.readConnectionLost)
    assert "IHalfCloseableProtocol(self.protocol, None)" in source
    assert "p.readConnectionLost()" in source
    # HangupWatcher finds the channel of a watched transport here.
    assert re.search(r"self\.protocol(: \w+)? = protocol", inspect.getsource(tcp.Connection.__init__))


# ------------------------------------------------------------ pipeserver/http/_twisted.py
# Every private name of Twisted pipeserver uses is named in pipeserver/http/_twisted.py
# and checked when it is imported; one test each below shows, with real bytes,
# what it does for us (and so what would break were it renamed or reshaped).


@pytest.mark.parametrize(
    "owner, name",
    [
        ("twisted.web.http.HTTPChannel", "_savedTimeOut"),
        ("twisted.web.http.HTTPChannel", "_abortingCall"),
        ("twisted.web.http.HTTPChannel", "_maybeChooseTransferDecoder"),
        ("twisted.web.http.HTTPChannel", "_respondToBadRequestAndDisconnect"),
        ("twisted.protocols.basic.LineReceiver", "_busyReceiving"),
        ("twisted.web.http.Request", "chunked"),
        ("twisted.web.http.Request", "_disconnected"),
        ("twisted.internet.base.ReactorBase", "_exitSignal"),
    ],
)
def test_a_missing_internal_stops_the_import_with_its_name(
    monkeypatch: pytest.MonkeyPatch, owner: str, name: str
) -> None:
    """No getattr default: a Twisted without one of the names refuses to
    start, naming the Twisted version and what is missing."""
    import importlib

    from pipeserver.http import _twisted

    module, _, cls = owner.rpartition(".")
    monkeypatch.delattr(getattr(importlib.import_module(module), cls), name)
    with pytest.raises(_twisted.TwistedChanged) as caught:
        _twisted._check()
    message = str(caught.value)
    assert name in message and f"Twisted {_twisted.VERSION}" in message


def test_a_reshaped_request_line_stops_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request line is read from a stock channel at import: were
    ``_command``/``_path``/``_version`` renamed, that probe says so."""
    from pipeserver.http import _twisted

    original = http.HTTPChannel.lineReceived

    def renamed(self, line):
        original(self, line)
        for name in ("_command", "_path", "_version"):
            if name in vars(self):
                setattr(self, name.upper(), vars(self).pop(name))

    monkeypatch.setattr(http.HTTPChannel, "lineReceived", renamed)
    with pytest.raises(_twisted.TwistedChanged, match="_command/_path/_version"):
        _twisted._check()


def test_request_line_is_read_at_header_time_and_gone_after_the_body() -> None:
    """StreamingChannel.requestLine reads ``_command``/``_path``/``_version``:
    set while the head is read (when PipeChannel dispatches PUT and POST),
    deleted once the body is in (when stock Twisted would render)."""
    from pipeserver.http._twisted import StreamingChannel

    seen: List[Tuple[bytes, bytes, bytes]] = []

    class Channel(StreamingChannel):
        def allHeadersReceived(self) -> None:
            seen.append(self.requestLine())
            super().allHeadersReceived()

    channel = Channel()
    channel.requestFactory = RecordingRequest
    RecordingRequest.recorder = Recorder()
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"PUT /p?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
    assert seen == [(b"PUT", b"/p?x=1", b"HTTP/1.1")]
    channel.dataReceived(b"abc")
    with pytest.raises(AttributeError):
        channel.requestLine()


def test_twisteds_own_parse_errors_reach_our_bad_request(env: Env) -> None:
    """Twisted calls ``_respondToBadRequestAndDisconnect`` on a malformed
    head; StreamingChannel passes it on to PipeChannel.badRequest, whose
    answer is our [ERROR] line. Without the hook: Twisted's bare 400."""
    client = env.client().send(b"GET /p HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
    assert client.response().status == 400
    assert client.response().body == b"[ERROR] Malformed request.\n"
    assert not client.open


def test_a_chunked_body_gets_our_decoder_through_the_private_hook(env: Env) -> None:
    """``_maybeChooseTransferDecoder`` is where Twisted picks the decoder;
    StreamingChannel swaps in ViewChunkedDecoder there (chunked.py). Without
    the hook the stock decoder would copy every body byte twice."""
    from pipeserver.http.chunked import ViewChunkedDecoder

    receiver = env.client().send(request(b"GET", b"/p"))
    sender = env.client().send(request(b"PUT", b"/p", chunked=True))
    assert type(sender.proto.transferDecoder()) is ViewChunkedDecoder
    sender.send(chunk(b"hello") + chunk(b""))
    assert receiver.response().body == b"hello"


def test_body_fast_path_then_a_pipelined_request_in_one_read(env: Env) -> None:
    """StreamingChannel.dataReceived gives a body straight to the decoder,
    setting ``_busyReceiving`` as LineReceiver would and handing what is left
    after the body (a pipelined request) back to LineReceiver's loop."""
    receiver = env.client().send(request(b"GET", b"/p"))
    sender = env.client().send(request(b"PUT", b"/p", chunked=True) + chunk(b"ab"))
    assert sender.proto._busyReceiving is False
    sender.send(chunk(b"cd") + chunk(b"") + request(b"GET", b"/version"))
    assert receiver.response().body == b"abcd"
    from pipeserver import __version__

    first, second = [r for r in sender.responses() if r.status == 200]
    assert first.lines[-1] == "[INFO] All receiver(s) was/were received successfully."
    assert second.body == __version__.encode() + b"\n"


def test_a_too_long_head_line_is_counted_as_too_large(env: Env) -> None:
    """lineLengthExceeded marks ``_receivedHeaderSize`` past the limit, and
    badRequest reads it back: a 431, not a plain 400."""
    client = env.client().send(b"GET /p HTTP/1.1\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n")
    assert client.response().status == 431
    assert client.response().body == b"[ERROR] Request headers are too large.\n"


def test_the_abort_timer_of_a_too_slow_head_is_twisteds_own(env: Env) -> None:
    """A head that takes too long gets a 408, then ``_abortingCall``: the
    timer Twisted itself cancels when the connection goes. Under another
    name it would stay on the reactor after every such connection."""
    client = env.client().send(b"GET /p HTTP/1.1\r\n")
    env.clock.advance(20)
    assert client.response().status == 408
    assert client.proto._abortingCall is None  # gone with the connection
    assert not [c for c in env.clock.getDelayedCalls() if "forceAbort" in repr(c.func)]


def test_response_chunked_reads_how_twisted_frames_the_response() -> None:
    from pipeserver.http._twisted import response_chunked

    req, _ = _response_wire()
    assert response_chunked(req) is True
    req, _ = _response_wire(b"Content-Length: 3")
    assert response_chunked(req) is False


def test_exit_signal_is_what_twistd_exits_with() -> None:
    """After a shutdown that cut transfers, tap.py has twistd exit by
    SIGTERM: ``ReactorBase._exitSignal`` is what twistd's runner reads."""
    from twisted.application import app
    from twisted.internet import base

    from pipeserver.http._twisted import set_exit_signal

    assert "reactor._exitSignal" in inspect.getsource(app)
    reactor = object.__new__(base.ReactorBase)
    set_exit_signal(reactor, 15)
    assert reactor._exitSignal == 15
    set_exit_signal(object(), 15)  # another kind of reactor: nothing to set


def test_the_channels_own_pauses_go_through_the_read_gate(env: Env) -> None:
    """HTTPChannel pauses and resumes its ``_networkProducer`` (the
    transport) when its write buffer fills and drains; PipeChannel puts its
    ReadGate there (gate.py), so those become the gate's CHANNEL hold and the
    pipe's own hold survives them. Under another name the channel would
    pause the transport behind the gate's back."""
    from pipeserver.http.gate import CHANNEL

    client = env.client()
    assert client.proto.readGate() is client.proto.gate
    client.proto.pauseProducing()
    assert client.proto.gate.holds == {CHANNEL} and client.reading == "paused"
    client.proto.resumeProducing()
    assert client.proto.gate.holds == set() and client.reading == "producing"


def test_a_reshaped_log_publisher_turns_the_direct_access_line_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``LogPublisher._observers`` (logs.py's access line skips the event
    while our text observer is the only one) is tried at import; a
    publisher that keeps its observers elsewhere fails closed: every line is
    an event again, never a crash."""
    from twisted.logger import LogPublisher

    from pipeserver.http import _twisted

    assert _twisted._logObserversKnown() and _twisted.LOG_OBSERVERS_KNOWN
    publisher = LogPublisher()
    assert _twisted.log_observers(publisher) == [] and _twisted.log_observers(print) is None

    original = LogPublisher.__init__

    def elsewhere(self, *observers):  # type: ignore[no-untyped-def]
        original(self, *observers)
        self._kept = tuple(vars(self).pop("_observers"))

    monkeypatch.setattr(LogPublisher, "__init__", elsewhere)
    assert not _twisted._logObserversKnown()
    monkeypatch.setattr(_twisted, "LOG_OBSERVERS_KNOWN", False)
    assert _twisted.log_observers(LogPublisher()) is None


def test_a_response_head_is_twisteds_head_in_one_write(env: Env) -> None:
    """PipeChannel.writeHeaders (issue 20) writes what HTTPChannel's writes,
    byte for byte, as one ``write`` instead of a ``writeSequence`` of ~40
    pieces."""
    from twisted.web.http_headers import Headers

    from pipeserver.headers import head

    headers = Headers({b"Content-Type": [b"text/plain"], b"X-Two": [b"a", b"b"]})
    headers.addRawHeader(b"content-length", b"0")
    stock = http.HTTPChannel()
    stock.makeConnection(StringTransport())
    stock.writeHeaders(b"HTTP/1.1", b"404", b"Not Found", headers)
    assert head(b"HTTP/1.1", b"404", b"Not Found", headers) == stock.transport.value() == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nX-Two: a\r\nX-Two: b\r\n"
        b"Content-Length: 0\r\n\r\n")
    stock.connectionLost(None)

    client = env.client()
    sequences: List[List[bytes]] = []
    client.transport.writeSequence = sequences.append  # type: ignore[method-assign]
    client.send(request(b"GET", b"/version"))
    wire = client.wire()
    assert sequences == []
    assert wire.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nServer: pipeserver\r\n" in wire


def _heads(env: Env, *paths: bytes) -> List[bytes]:
    """The response head of a GET of each path, and of a 1 KiB transfer's
    receiver and sender, on this site."""
    heads = [env.client().send(request(b"GET", path)).wire().partition(b"\r\n\r\n")[0]
             for path in paths]
    receiver = env.client().send(request(b"GET", b"/leaf"))
    sender = env.client().send(request(b"PUT", b"/leaf", body=b"x" * 1024))
    heads += [c.wire().partition(b"\r\n\r\n")[0] for c in (receiver, sender)]
    return heads


def test_a_leaf_root_is_processed_without_traversal_same_heads(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PipeRequest.process (issue 20): for the leaf root, Twisted's
    ``Request.process`` less the traversal and a Date per request
    (_twisted.process_leaf, headers.http_date); the same heads, byte for
    byte, as Twisted's own gives."""
    from pipeserver import headers
    from pipeserver.http import _twisted

    assert _twisted.LEAN_PROCESS
    paths = (b"/version", b"/robots.txt?y=%41", b"/help", b"/favicon.ico")
    for _ in range(3):  # should the second tick between the two
        lean = _heads(env, *paths)
        monkeypatch.setattr(_twisted, "LEAN_PROCESS", False)
        stock = _heads(env, *paths)
        monkeypatch.setattr(_twisted, "LEAN_PROCESS", True)
        if lean == stock:
            break
    assert lean == stock
    assert all(h.count(b"\r\nServer: pipeserver\r\nDate: ") == 1 for h in lean), lean
    assert headers.http_date() in (http.datetimeToString(), http.datetimeToString(int(time.time()) - 1))

    def no_traversal(self, request):  # type: ignore[no-untyped-def]
        raise AssertionError("traversed")

    def no_date(*args):  # type: ignore[no-untyped-def]
        raise AssertionError("formatted")

    monkeypatch.setattr(server.Site, "getResourceFor", no_traversal)
    monkeypatch.setattr(server, "datetimeToString", no_date)
    assert [h.split(b"\r\n")[0] for h in _heads(env, b"/version")] == [b"HTTP/1.1 200 OK"] * 3


def test_a_reshaped_request_process_turns_the_lean_one_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """process_leaf copies what ``server.Request.process`` does; at import
    it is compared with it on requests of its own. A Twisted whose
    ``process`` does anything more (here: one more header) fails closed:
    Twisted's own runs."""
    from pipeserver.http import _twisted

    assert _twisted._leanProcessMatches()
    original = server.Request.process

    def more(self):  # type: ignore[no-untyped-def]
        self.setHeader(b"X-New", b"1")
        original(self)

    monkeypatch.setattr(server.Request, "process", more)
    assert not _twisted._leanProcessMatches()
    monkeypatch.setattr(server.Request, "process", original)
    monkeypatch.delattr(resource, "_IEncodingResource")
    assert not _twisted._leanProcessMatches()
    monkeypatch.setattr(_twisted, "LEAN_PROCESS", False)
    assert _twisted.process_leaf(object(), b"date") is False


def test_a_reshaped_dowrite_keeps_the_writer_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """stop_writing_if_done does what a FileDescriptor's ``doWrite`` does
    once all is sent; at import the two are compared on stub descriptors.
    A ``doWrite`` that does more there (here: tells its producer), or no
    ``_writeDisconnecting``, fails closed: the writer stays registered and
    the reactor's next turn does Twisted's own."""
    from pipeserver.http import _twisted

    assert _twisted._idleWriterCheck() and _twisted.IDLE_WRITER_STOPS
    original = abstract.FileDescriptor.doWrite

    def more(self):  # type: ignore[no-untyped-def]
        result = original(self)
        if self.producer is not None:
            self.producerPaused = True
        return result

    monkeypatch.setattr(abstract.FileDescriptor, "doWrite", more)
    assert not _twisted._idleWriterCheck()
    monkeypatch.setattr(abstract.FileDescriptor, "doWrite", original)
    monkeypatch.delattr(abstract.FileDescriptor, "_writeDisconnecting")
    assert not _twisted._idleWriterCheck()
    monkeypatch.setattr(_twisted, "IDLE_WRITER_STOPS", False)
    assert _twisted.stop_writing_if_done(object()) is False
