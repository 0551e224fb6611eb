"""Keep libraries' own logging and thread tracebacks off the operator's terminal.

paramiko reports a failed connection twice: to its caller (which this tool turns into one
line per target) and to its logger, with tracebacks ("Exception (client): Error reading SSH
protocol banner", "EOFError"); its transport thread may also die with "OSError: Bad file
descriptor" when the connection is closed under it, which Python prints through
`threading.excepthook`. Neither is the operator's business: the transport says what failed.
With PROVISIONER_DEBUG set, library logging goes to stderr (for a developer, never for a run).
"""

from __future__ import annotations

import logging
import os
import threading

_installed = threading.Lock()
_done = False


def keep_off_terminal() -> None:
    """No library log record reaches stderr through Python's last-resort handler, and the
    background threads of network libraries die silently (their caller reports the failure).
    Idempotent; called by the CLI at start and by every SSH connection."""
    global _done
    with _installed:
        if _done:
            return
        _done = True
        root = logging.getLogger()
        if os.environ.get("PROVISIONER_DEBUG"):
            logging.basicConfig(level=logging.DEBUG)
        elif not root.handlers:
            # A handler on the root logger, even a null one, means records are handled:
            # `logging.lastResort` (stderr, WARNING and above) is never used.
            root.addHandler(logging.NullHandler())
        previous = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            if _library_thread(args.thread) and not os.environ.get("PROVISIONER_DEBUG"):
                return
            previous(args)

        threading.excepthook = hook


def silence_library_logging() -> None:
    """paramiko's logger handles its own records (dropped) and never passes them on."""
    keep_off_terminal()
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = bool(os.environ.get("PROVISIONER_DEBUG"))


def _library_thread(thread: threading.Thread | None) -> bool:
    """Whether `thread` belongs to a network library (paramiko's transport and its helpers)."""
    if thread is None:
        return False
    return type(thread).__module__.split(".", 1)[0] == "paramiko"
