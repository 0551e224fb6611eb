"""Unresponsive workstations on loopback addresses, for the tests and the fleet benchmark.

Linux routes all of 127.0.0.0/8 to loopback, so each simulated workstation gets its own
address. Three kinds of unreachable host:

- `refusing(host)`: nothing listens there (the port is checked free): the connect is refused,
  as a machine that is up without its SSH server;
- `Hung(host, "silent")`: accepts the TCP connection and never says a word (a hung server or
  a middlebox);
- `Hung(host, "banner")`: sends an SSH banner, then stalls (a server stuck after accept).

A switched-off machine on a real network drops the SYN (the connect times out) rather than
refusing; on loopback the kernel answers, so "timed out" is simulated by the hung kinds.
"""

from __future__ import annotations

import contextlib
import socket
import threading

BANNER = b"SSH-2.0-OpenSSH_9.6 hung-for-tests\r\n"


def refusing(host: str) -> int:
    """A port on `host` where nothing listens (bound then released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Hung:
    """A listener on `host` that accepts and then stalls ("silent" or after a "banner");
    counts the connections it accepted, so a test can see that a later run tried again."""

    def __init__(self, host: str, kind: str = "silent", port: int = 0) -> None:
        assert kind in ("silent", "banner")
        self.kind = kind
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(256)
        self._sock.settimeout(0.2)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self._held.append(conn)
            if self.kind == "banner":
                with contextlib.suppress(OSError):
                    conn.sendall(BANNER)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self._sock.close()
