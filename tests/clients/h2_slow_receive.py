"""A slow HTTP/2 receiver (prior knowledge) whose socket buffer is pinned.

    python h2_slow_receive.py URL OUT RATE RCVBUF

GETs URL over h2c and writes the body to OUT at RATE bytes a second at
most, flushed as it goes. Its windows are curl's (32 MiB for the stream and
the connection, acknowledged as it writes), so what holds the server back
is TCP, as with ``curl --limit-rate``; but its socket's receive buffer is
fixed at RCVBUF bytes before it connects. curl's socket is autotuned by the
kernel up to ``net.ipv4.tcp_rmem``'s maximum (32 MiB on some hosts): on a
loaded machine it grew past 8 MiB, and then the kernel, not the server,
held the sender's body. Exits 0 once the response has ended with 200, 1
otherwise (printing why on stderr)."""

from __future__ import annotations

import socket
import sys
import time
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.settings

WINDOW = 32 * 1024 * 1024


def main() -> int:
    url, out, rate, rcvbuf = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((parts.hostname, parts.port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW})
    conn.increment_flow_control_window(WINDOW - 65535)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", parts.netloc),
                          (":path", path)], end_stream=True)
    sock.sendall(conn.data_to_send())
    status = None
    started = time.monotonic()
    written = 0
    with open(out, "wb") as f:
        while True:
            # At most RATE a second, as curl --limit-rate: sleep before reading more.
            ahead = written / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            data = sock.recv(16384)
            if not data:
                print(f"connection closed after {written} bytes", file=sys.stderr)
                return 1
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers).get(b":status")
                elif isinstance(event, h2.events.DataReceived):
                    f.write(event.data)
                    f.flush()
                    written += len(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    sock.sendall(conn.data_to_send())
                    if status != b"200":
                        print(f"status {status!r}", file=sys.stderr)
                        return 1
                    return 0
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    print(f"{event!r} after {written} bytes", file=sys.stderr)
                    return 1
            pending = conn.data_to_send()
            if pending:
                sock.sendall(pending)


if __name__ == "__main__":
    sys.exit(main())
