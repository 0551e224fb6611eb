"""Unresponsive workstations on loopback addresses, for the tests and the fleet benchmark.

Linux routes all of 127.0.0.0/8 to loopback, so each simulated workstation gets its own
address. Four kinds of unreachable host:

- `refusing(host)`: nothing listens there (the port is checked free): the connect is refused,
  as a machine that is up without its SSH server;
- `Dropping(host)`: the TCP connect is never answered (a listener whose accept queue is kept
  full: the kernel drops further SYNs), as a switched-off machine or a firewall that drops;
- `Hung(host, "silent")`: accepts the TCP connection and never says a word (a hung server or
  a middlebox);
- `Hung(host, "banner")`: sends an SSH banner, then stalls (a server stuck after accept).

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


class Dropping:
    """A port on `host` where connects time out: a listener with a backlog of 0 whose queue is
    filled by two connections it never accepts, so the kernel drops every later SYN."""

    def __init__(self, host: str) -> None:
        self._sock = socket.socket()
        self._sock.bind((host, 0))
        self._sock.listen(0)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self._fill: list[socket.socket] = []
        for _ in range(2):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect((host, self.port))
            self._fill.append(s)

    def stop(self) -> None:
        for s in self._fill:
            s.close()
        self._sock.close()


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
