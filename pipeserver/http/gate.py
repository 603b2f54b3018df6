"""One owner of whether a connection reads: its :class:`ReadGate`.

Three parties want to stop reading a connection, for their own reasons:
Twisted's ``HTTPChannel`` (its write buffer is full, or it holds a
pipelined request it cannot handle yet), the pipe (it waits for its
parties, or a receiver cannot take more) and ``PipeChannel`` (its client
does not take the responses already written: :data:`BACKLOG`). Each used
to pause and resume the transport itself, so one could undo the other's
pause. Now each holds the gate under its own reason, and releases only
that: the transport reads iff no hold is held.

The gate stands in for the transport as the channel's network producer
(``_twisted.StreamingChannel.setReadGate``), so Twisted's own pauses and
resumes are the :data:`CHANNEL` hold.
"""

from __future__ import annotations

from typing import FrozenSet

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

#: HTTPChannel's: its write buffer is full, or it holds a pipelined request.
CHANNEL = "channel"
#: The pipe's: it waits for its parties, or a receiver cannot take more.
PIPE = "pipe"
#: PipeChannel's: responses written on this connection (or for its client)
#: are not taken, so no next request is read.
BACKLOG = "backlog"

_BITS = {CHANNEL: 1, PIPE: 2, BACKLOG: 4}


@implementer(IPushProducer)
class ReadGate:
    """Reads ``producer`` (a transport) iff nobody holds it back.

    As an ``IPushProducer`` it is what HTTPChannel pauses and resumes: those
    calls take and release the :data:`CHANNEL` hold.
    """

    # One per connection, parked ones included (where HTTPChannel holds it
    # while it handles the request): no __dict__, and the holds are bits of
    # an int, so holding allocates nothing.
    __slots__ = ("producer", "_bits")

    def __init__(self, producer: IPushProducer) -> None:
        self.producer = producer
        self._bits = 0

    @property
    def holds(self) -> FrozenSet[str]:
        """The reasons held now."""
        return frozenset(reason for reason, bit in _BITS.items() if self._bits & bit)

    def hold(self, reason: str) -> None:
        """Stop reading until ``reason`` is released (and every other hold)."""
        if not self._bits:
            self.producer.pauseProducing()
        self._bits |= _BITS[reason]

    def release(self, reason: str) -> None:
        """Drop ``reason``'s hold; read again if it was the last one."""
        bit = _BITS[reason]
        if self._bits & bit:
            self._bits &= ~bit
            if not self._bits:
                self.producer.resumeProducing()

    def drain(self) -> None:
        """Read on, whatever is held: we are closing the connection, and its
        client must still read our last words rather than be reset for
        sending into a socket we stopped reading."""
        self._bits = 0
        self.producer.resumeProducing()

    # IPushProducer, for HTTPChannel
    def pauseProducing(self) -> None:
        self.hold(CHANNEL)

    def resumeProducing(self) -> None:
        self.release(CHANNEL)

    def stopProducing(self) -> None:
        self.producer.stopProducing()

    # What HTTPChannel also calls on its network producer (the transport).
    def registerProducer(self, producer: object, streaming: bool) -> None:
        self.producer.registerProducer(producer, streaming)  # type: ignore[attr-defined]  # a transport

    def unregisterProducer(self) -> None:
        self.producer.unregisterProducer()  # type: ignore[attr-defined]  # a transport
