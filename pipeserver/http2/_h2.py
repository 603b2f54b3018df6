"""Every private name of ``h2`` and ``hyperframe`` that pipeserver uses, in one place.

``http2.py`` runs the sans-IO ``h2`` library; what it needs beyond h2's
public API is here, named once and checked when this module is imported
(as ``_twisted.py`` does for Twisted). Two kinds:

- **Hooks the connection always uses** (every h2 that setup.cfg allows,
  4.1 to 4.4; CI runs the lowest and the newest): :class:`FrameBuffer`
  refuses a frame longer than our ``SETTINGS_MAX_FRAME_SIZE`` as soon as
  its 9-byte header is in (h2 buffers the whole frame first), caps a header
  block still waiting for END_HEADERS, and gives each DATA frame a repr
  that does not hexlify its payload (h2 builds ``repr(frame)`` for a trace
  nobody reads: a third of a transfer's CPU); :class:`FastH2Connection`
  counts the frames h2 handles without an event (``silent``: a
  WINDOW_UPDATE or RST_STREAM on a closed stream...), so they spend a
  budget too, and keeps its state machine open after a client's GOAWAY
  (:meth:`FastH2Connection.keep_open`). If h2 ever lacks one of them,
  :data:`PROBLEMS` says which, h2's own code runs instead, and one log line
  says so.
- **The DATA fast path** (issue 12, item 7), which mirrors h2's code for
  plain DATA frames each way. It runs only on the h2 and hyperframe
  releases it was verified against (:data:`VERIFIED`: tests/test_h2fast.py
  fuzzes it against h2 and pins the sources it mirrors); on any other, the
  stock h2 path, and one log line.

A DATA frame on h2's path is a DATA frame of a private subclass (its repr);
h2 dispatches frames by class, so each connection maps that subclass to
h2's own handler: nothing of h2 or hyperframe is patched for the process.

What would let this module go: docs/HTTP2.md ("Upstream").

The fast path
-------------

A pipe over HTTP/2 is almost only DATA frames of 16 KiB on streams that are
open, and ``h2`` spends about 14 us on each: ``receive_data`` parses it with
hyperframe (copying the payload twice, building a frame object and its
repr for a trace nobody reads), walks both state machines and the frame
dispatch; ``send_data`` builds a ``DataFrame``, serialises it (another copy)
into a ``bytearray`` that ``data_to_send`` copies once more.

:class:`FastH2Connection` is ``h2.connection.H2Connection`` with those two
paths cut short for the simple case, and everything else left to ``h2``:

- Inbound, a complete DATA frame without padding, not too long, on a
  stream that is open for it (a state where ``h2``'s own transitions for
  RECV_DATA change nothing), within both windows and the stream's
  ``content-length``, is read from its 9-byte header here; the windows and
  the stream's counters change exactly as ``h2``'s ``_receive_data_frame``
  and ``H2Stream.receive_data`` change them, and the same events come out.
  Any other frame, or one that would be an error, goes to ``h2`` in order,
  through its own ``FrameBuffer``, so it fails or succeeds as it would
  there.
- Outbound, ``send_data`` without END_STREAM or padding, within the
  windows, appends a 9-byte header and the payload (not copied when it is a
  ``bytes`` or a whole view of one) to a list, after whatever ``h2`` had
  queued; :meth:`FastH2Connection.pending` hands the lot out for
  ``transport.writeSequence``.

The bytes on the wire are the same as ``h2``'s, byte for byte, and so are
the events and the exceptions: tests/test_h2fast.py fuzzes both against each
other, and pins the ``h2`` sources this mirrors. ``PIPESERVER_H2_FAST=0`` in
the environment (read at import) or :data:`FAST` = False turns it off for
connections made afterwards; they then run ``h2``'s code alone.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

import h2
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import h2.stream
import h2.windows
import hyperframe
import hyperframe.exceptions
import hyperframe.frame
from h2.connection import ConnectionInputs, H2ConnectionStateMachine
from h2.stream import H2StreamStateMachine, StreamInputs
from twisted.logger import Logger

if TYPE_CHECKING:
    from h2._typing import Buffer

log = Logger()

#: The installed releases.
VERSION = h2.__version__
HYPERFRAME_VERSION = hyperframe.__version__
#: (h2, hyperframe) releases the DATA fast path was verified against: the
#: fuzz test passes and the mirrored sources match their pins
#: (tests/test_h2fast.py). Add one only after both, on that release.
VERIFIED = frozenset({("4.4.1", "6.1.0")})

# A frame header (RFC 9113 4.1): 24-bit length (as 16 + 8 bits, as
# hyperframe reads it), type, flags, reserved bit + 31-bit stream id.
_HEADER = struct.Struct(">HBBBL")
_DATA = 0x0
_END_STREAM = 0x1
_PADDED = 0x8
_STREAM_ID = 0x7FFFFFFF


# ---- what this h2 offers
def _problems() -> List[str]:
    """The private names the hooks need that this h2 lacks (empty: none)."""
    missing = []
    buffer = h2.frame_buffer.FrameBuffer(server=True)
    if not isinstance(getattr(buffer, "_data", getattr(buffer, "data", None)), (bytes, bytearray)):
        missing.append("FrameBuffer._data (or .data)")
    for name in ("_update_header_buffer", "_validate_frame_length"):
        if not callable(getattr(buffer, name, None)):
            missing.append(f"FrameBuffer.{name}")
    if not isinstance(getattr(buffer, "_headers_buffer", None), list):
        missing.append("FrameBuffer._headers_buffer")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    table = getattr(conn, "_frame_dispatch_table", None)
    if not isinstance(table, dict) or hyperframe.frame.DataFrame not in table:
        missing.append("H2Connection._frame_dispatch_table")
    for name in ("_receive_frame", "_receive_data_frame"):
        if not callable(getattr(conn, name, None)):
            missing.append(f"H2Connection.{name}")
    state = getattr(getattr(conn, "state_machine", None), "state", None)
    if not isinstance(state, h2.connection.ConnectionState) or not hasattr(
        h2.connection.ConnectionState, "SERVER_OPEN"
    ):
        missing.append("H2Connection.state_machine.state")
    if not callable(getattr(hyperframe.frame.Frame, "_body_repr", None)):
        missing.append("hyperframe Frame._body_repr")
    return missing


#: What of h2's internals the hooks need and this h2 lacks (then h2's own
#: frame buffer and frame handling run, without the hooks).
PROBLEMS = _problems()
HOOKS = not PROBLEMS
#: Whether the fast path may run on this h2 at all.
VERIFIED_HERE = HOOKS and (VERSION, HYPERFRAME_VERSION) in VERIFIED
#: Whether new connections take the fast path (``PIPESERVER_H2_FAST=0``: no).
FAST = VERIFIED_HERE and os.environ.get("PIPESERVER_H2_FAST", "1").strip() != "0"

if not HOOKS:  # pragma: no cover  (an h2 outside setup.cfg's range)
    log.warn(
        "h2 {version} lacks {missing}: HTTP/2 runs on h2's own frame buffer, "
        "without pipeserver's early frame-size check and header-block cap "
        "(pipeserver/http2/_h2.py)",
        version=VERSION,
        missing=", ".join(PROBLEMS),
    )
elif not VERIFIED_HERE:
    log.info(
        "h2 {version} (hyperframe {hyperframe}) is not a release the HTTP/2 DATA "
        "fast path was verified against: h2's own code handles DATA frames "
        "(pipeserver/http2/_h2.py)",
        version=VERSION,
        hyperframe=HYPERFRAME_VERSION,
    )


# ---- frames
class QuietDataFrame(hyperframe.frame.DataFrame):
    """A DATA frame whose repr gives its payload's length, not its hex: h2
    4.x builds ``repr(frame)`` for every frame it receives, for a trace
    that is off ("Received frame: %s" in ``H2Connection._receive_frame``)."""

    def _body_repr(self) -> str:
        return f"<{len(self.data)} bytes>"


def _buffered(buffer: h2.frame_buffer.FrameBuffer) -> Any:
    """What ``buffer`` holds of frames not yet parsed (``_data`` since h2
    4.3, ``data`` before)."""
    return buffer.__dict__["_data"] if "_data" in buffer.__dict__ else buffer.__dict__["data"]


class FrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, which also:

    - refuses a frame whose header declares more than our
      ``SETTINGS_MAX_FRAME_SIZE`` as soon as that header is in, where h2
      waits for the whole frame (up to 16 MiB held) before refusing it;
    - caps the bytes of a header block still waiting for its END_HEADERS:
      h2 caps only the CONTINUATION frames (64, so up to 1 MiB per
      connection) and the header list once decoded; a CONTINUATION flood
      is ended at ``cap`` (twice ``--max-header-bytes``: HPACK rarely
      makes a header list bigger than its encoding);
    - hands DATA frames out as :class:`QuietDataFrame`."""

    def __init__(self, cap: int) -> None:
        super().__init__(server=True)
        self.cap = cap

    def check_header(self) -> None:
        """Raise ``FrameTooLargeError`` if the frame the buffer starts with
        is declared longer than the most we take."""
        data = _buffered(self)
        if len(data) >= 9:
            length = (data[0] << 16) | (data[1] << 8) | data[2]
            if length > self.max_frame_size:
                raise h2.exceptions.FrameTooLargeError(
                    f"Received overlong frame: length {length}, max {self.max_frame_size}"
                )

    def __next__(self) -> hyperframe.frame.Frame:
        self.check_header()
        frame = super().__next__()
        if type(frame) is hyperframe.frame.DataFrame:
            frame.__class__ = QuietDataFrame
        return frame

    def _update_header_buffer(self, f: Any) -> Any:
        frame = super()._update_header_buffer(f)
        pending = self._headers_buffer
        if pending and sum(len(part.data) for part in pending) > self.cap:
            raise h2.exceptions.DenialOfServiceError("Header block too large.")
        return frame


# ---- the fast path's view of h2's state machines
def _quiet_states(table: Any, states: Any, input_: Any, func: Any) -> Tuple[Any, ...]:
    """The states in which ``input_`` leaves a state machine where it is
    and runs ``func`` (None: nothing). Read from h2's own transition tables,
    so a new h2 that changes them narrows the fast path, not breaks it.
    A tuple: ``in`` finds an enum member by identity, where a set would
    call the Python ``Enum.__hash__``."""
    return tuple(s for s in states if table.get((s, input_)) == (func, s))


# The connection states where receiving or sending DATA is a no-op for the
# connection's state machine (SERVER_OPEN, CLIENT_OPEN).
_CONN_RECV = _quiet_states(
    H2ConnectionStateMachine._transitions, h2.connection.ConnectionState, ConnectionInputs.RECV_DATA, None
)
_CONN_SEND = _quiet_states(
    H2ConnectionStateMachine._transitions, h2.connection.ConnectionState, ConnectionInputs.SEND_DATA, None
)
# The stream states where RECV_DATA only fires DataReceived (OPEN,
# HALF_CLOSED_LOCAL), and where SEND_DATA does nothing (OPEN,
# HALF_CLOSED_REMOTE).
_STREAM_RECV = _quiet_states(
    h2.stream._transitions,
    h2.stream.StreamState,
    StreamInputs.RECV_DATA,
    H2StreamStateMachine.data_received,
)
_STREAM_SEND = _quiet_states(
    h2.stream._transitions, h2.stream.StreamState, StreamInputs.SEND_DATA, None
)
# Where sending WINDOW_UPDATE changes no state (the connection's: open;
# a stream's: open, half-closed, reserved).
_CONN_WINDOW = _quiet_states(
    H2ConnectionStateMachine._transitions,
    h2.connection.ConnectionState,
    ConnectionInputs.SEND_WINDOW_UPDATE,
    None,
)
_STREAM_WINDOW = _quiet_states(
    h2.stream._transitions, h2.stream.StreamState, StreamInputs.SEND_WINDOW_UPDATE, None
)
_WINDOW_UPDATE = 0x8
_INCREMENT = struct.Struct(">L")


class FastH2Connection(h2.connection.H2Connection):
    """h2's server connection with the hooks above, and a short path for
    plain DATA frames each way (where :data:`FAST`).

    Use :meth:`pending` (a list of buffers) rather than ``data_to_send``
    (which still works, at the cost of a join)."""

    def __init__(
        self, config: Optional[h2.config.H2Configuration] = None, header_cap: int = 1 << 20
    ) -> None:
        super().__init__(config=config)
        #: Whether this connection takes the fast path (fixed at birth).
        self.fast = FAST
        # What is to be sent, in order, before h2's own ``_data_to_send``.
        self._out: List[bytes] = []
        #: Frames h2 handled without an event (on a closed stream...), so
        #: far: http2.py spends a budget on each.
        self.silent = 0
        if HOOKS:
            self.incoming_buffer = FrameBuffer(header_cap)
            table = self._frame_dispatch_table
            table[QuietDataFrame] = table[hyperframe.frame.DataFrame]

    def _receive_frame(self, frame: Any) -> List[h2.events.Event]:
        events: List[h2.events.Event] = super()._receive_frame(frame)
        if not events:
            self.silent += 1
        return events

    def mid_header_block(self) -> bool:
        """Whether a header block has begun and not ended (a HEADERS
        without END_HEADERS whose CONTINUATIONs are still to come). False
        without the hooks (an unverified h2): the idle timeout bounds it."""
        return HOOKS and bool(self.incoming_buffer._headers_buffer)

    def keep_open(self) -> None:
        """Back to open after a client's GOAWAY: h2 closes its state
        machine on any GOAWAY and would send nothing more, where the
        streams already open may finish (RFC 9113 6.8)."""
        self.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN

    # ---- inbound
    def receive_data(self, data: "Buffer") -> List[h2.events.Event]:
        buf = self.incoming_buffer
        if not self.fast or buf._preamble_len:
            # The preface (and its check) is h2's; it is over after 24 bytes.
            return super().receive_data(data)
        buf.max_frame_size = self.max_inbound_frame_size
        events: List[h2.events.Event] = []
        try:
            if buf._data:
                buf._data += data
                self._drain_buffer(events, True)
            else:
                # Read straight from the caller's bytes; only what is left
                # of them (a frame's beginning, a frame for h2) is buffered.
                with memoryview(data) as view:
                    used = self._receive_fast(view, events)
                    if used < len(view):
                        buf._data += view[used:]
                if buf._data:
                    self._drain_buffer(events, False)
        except hyperframe.exceptions.InvalidPaddingError as e:
            # As H2Connection.receive_data.
            self._terminate_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR)
            msg = "Received frame with invalid padding."
            raise h2.exceptions.ProtocolError(msg) from e
        except h2.exceptions.ProtocolError as e:
            self._terminate_connection(e.error_code)
            raise
        return events

    def _drain_buffer(self, events: List[h2.events.Event], fast: bool) -> None:
        """Handle what ``incoming_buffer`` holds: plain DATA frames here
        (unless ``fast`` is False: the first frame is known not to be one),
        the next other frame by h2 (one at a time, to keep the order), and
        so on until only a frame's beginning is left."""
        buf = self.incoming_buffer
        assert isinstance(buf, FrameBuffer)  # the fast path runs with the hooks
        pending = buf._data
        while True:
            size = len(pending)
            if size < 9:
                return
            # A frame longer than we take is refused at its header, not
            # once whole (FrameBuffer.check_header).
            buf.check_header()
            if (
                pending[3] == _DATA
                and size < 9 + ((pending[0] << 16) | (pending[1] << 8) | pending[2])
                and (pending[5] & 0x7F or pending[6] or pending[7] or pending[8])
            ):
                # A DATA frame's beginning (half a 16 KiB frame is one TLS
                # record of curl's): h2 would only parse its header, which
                # is valid (a stream id), and stop. Other headers h2 checks
                # at once (a SETTINGS on a stream...), so they go to it.
                return
            if fast:
                # A memoryview pins the bytearray's size; release it before
                # deleting from its front.
                with memoryview(pending) as view:
                    used = self._receive_fast(view, events)
                if used:
                    del pending[:used]
                    continue
            fast = True
            try:
                frame = next(buf)
            except StopIteration:
                return
            events.extend(self._receive_frame(frame))
            pending = buf._data

    def _receive_fast(self, view: memoryview, events: List[h2.events.Event]) -> int:
        """Handle the plain DATA frames at the start of ``view``; return how
        many bytes they took. Stops, without side effects, at the first
        frame it must leave to h2: incomplete, another type, padded, too
        long, on a stream not open for DATA, or one h2 would refuse (beyond
        a window or the content-length): h2 then raises just as it would."""
        if self.incoming_buffer._headers_buffer or self.state_machine.state not in _CONN_RECV:
            # Mid header block any frame but CONTINUATION is h2's error.
            return 0
        size = len(view)
        pos = 0
        limit = self.max_inbound_frame_size
        streams = self.streams
        conn_window = self._inbound_flow_control_window_manager
        unpack = _HEADER.unpack_from
        while size - pos >= 9:
            high, low, kind, flags, sid = unpack(view, pos)
            length = (high << 8) | low
            end = pos + 9 + length
            if kind != _DATA or flags & _PADDED or length > limit or end > size:
                break
            stream = streams.get(sid & _STREAM_ID)
            if stream is None:
                break
            machine = stream.state_machine
            window = stream._inbound_window_manager
            if (
                machine.state not in _STREAM_RECV
                or not machine.headers_received
                or length > conn_window.current_window_size
                or length > window.current_window_size
            ):
                break
            ended = bool(flags & _END_STREAM)
            expected = stream._expected_content_length
            actual = stream._actual_content_length + length
            if expected is not None and (expected < actual or (ended and expected != actual)):
                break
            # Now as _receive_data_frame and H2Stream.receive_data: neither
            # can fail from here (the checks above are theirs).
            conn_window.current_window_size -= length
            window.current_window_size -= length
            stream._actual_content_length = actual
            event = h2.events.DataReceived(stream_id=machine.stream_id)
            event.data = bytes(view[pos + 9 : end])
            event.flow_controlled_length = length
            events.append(event)
            if ended:
                closed = machine.process_input(StreamInputs.RECV_END_STREAM)
                event.stream_ended = closed[0]  # type: ignore[assignment]
                events.extend(closed)
            pos = end
        return pos

    # ---- outbound
    def send_data(
        self,
        stream_id: int,
        data: bytes | memoryview,
        end_stream: bool = False,
        pad_length: Any = None,
    ) -> None:
        size = len(data)
        if self.fast and not end_stream and pad_length is None and size:
            stream = self.streams.get(stream_id)
            if (
                stream is not None
                and size <= self.max_outbound_frame_size
                and size <= self.outbound_flow_control_window
                and size <= stream.outbound_flow_control_window
                and self.state_machine.state in _CONN_SEND
                and stream.state_machine.state in _STREAM_SEND
            ):
                # As H2Connection.send_data and H2Stream.send_data, which
                # would pass the same checks and change nothing else.
                stream.outbound_flow_control_window -= size
                self.outbound_flow_control_window -= size
                out = self._out
                if self._data_to_send:
                    # What h2 queued before goes first.
                    out.append(bytes(self._data_to_send))
                    self._data_to_send = bytearray()
                out.append(_HEADER.pack(size >> 8, size & 0xFF, _DATA, 0, stream_id))
                out.append(_payload(data))
                return
        super().send_data(stream_id, data, end_stream=end_stream, pad_length=pad_length)

    def increment_flow_control_window(self, increment: int, stream_id: Optional[int] = None) -> None:
        # A stream's WINDOW_UPDATE: http2.py sends one per read that brought
        # DATA (as the pipe passes it on), so about one per TLS record.
        if self.fast and stream_id is not None and 1 <= increment <= self.MAX_WINDOW_INCREMENT:
            stream = self.streams.get(stream_id)
            if (
                stream is not None
                and self.state_machine.state in _CONN_WINDOW
                and stream.state_machine.state in _STREAM_WINDOW
            ):
                window = stream._inbound_window_manager
                size = window.current_window_size + increment
                if size <= h2.windows.LARGEST_FLOW_CONTROL_WINDOW:
                    # As H2Stream.increase_flow_control_window and
                    # WindowManager.window_opened, and the frame serialised.
                    window.current_window_size = size
                    if size > window.max_window_size:
                        window.max_window_size = size
                    self._data_to_send += _HEADER.pack(
                        0, 4, _WINDOW_UPDATE, 0, stream_id
                    ) + _INCREMENT.pack(increment)
                    return
        super().increment_flow_control_window(increment, stream_id)

    def pending(self) -> List[bytes]:
        """Everything queued to send, in order, as ``bytes`` buffers for
        ``transport.writeSequence`` (empty if nothing is); the queue is
        then empty, as after ``data_to_send()``."""
        out = self._out
        if self._data_to_send:
            out.append(bytes(self._data_to_send))
            self._data_to_send = bytearray()
        if out:
            self._out = []
        return out

    def data_to_send(self, amount: Optional[int] = None) -> bytes:
        if self._out:
            self._data_to_send = bytearray(b"".join(self.pending()))
        return super().data_to_send(amount)

    def clear_outbound_data_buffer(self) -> None:
        self._out = []
        super().clear_outbound_data_buffer()


def _payload(data: bytes | memoryview) -> bytes:
    """``data`` as ``bytes`` (Twisted's TCP ``writeSequence`` takes nothing
    else), without a copy when it is one or a whole view of one."""
    if type(data) is bytes:
        return data
    if isinstance(data, memoryview):
        whole = data.obj
        if type(whole) is bytes and data.nbytes == len(whole) and data.contiguous:
            return whole
    return bytes(data)


__all__ = [
    "FAST",
    "HOOKS",
    "PROBLEMS",
    "VERIFIED",
    "VERIFIED_HERE",
    "VERSION",
    "FastH2Connection",
    "FrameBuffer",
    "QuietDataFrame",
]
