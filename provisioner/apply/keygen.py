"""Key generation and PKCS#12 encoding across cores: they are nearly all of a first apply.

One `Workers` pool serves a whole apply. Keys come back in order as they are made, so the
caller escrows and commits each one (fsyncs: the disk's time, not the CPU's) while the workers
go on generating the next ones; only two generations per worker are queued ahead, so the
encoding the caller submits once a generation is committed runs between them, and the cores
never wait for the disk. Keys, passwords and PKCS#12 bytes cross the process boundary through
pipes, never files.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from provisioner.crypto.keys import generate_key


@dataclass(frozen=True, slots=True)
class EncodeJob:
    """What one PKCS#12 encoding needs (the password is a secret: never shown or logged)."""

    key: rsa.RSAPrivateKey
    certificate: bytes  # DER
    chain: bytes  # PEM, the issuer's certificates ("" when self-signed)
    friendly_name: str
    password: str = field(repr=False)
    profile: str


class _Payload(NamedTuple):
    """An EncodeJob as it crosses the pipe to a worker: the key as PKCS#8 DER."""

    key_der: bytes
    certificate: bytes
    chain: bytes
    friendly_name: str
    password: str
    profile: str


def _generate_der(size: int) -> bytes:
    return _der(generate_key(size))


def _der(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load(der: bytes) -> rsa.RSAPrivateKey:
    # Made by our own child process a moment ago: skip OpenSSL's slow RSA re-check.
    key = serialization.load_der_private_key(der, None, unsafe_skip_rsa_key_validation=True)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _encode(job: _Payload) -> bytes:
    from cryptography import x509

    from provisioner.crypto import pkcs12

    chain = tuple(x509.load_pem_x509_certificates(job.chain)) if job.chain else ()
    return pkcs12.encode(
        _load(job.key_der),
        x509.load_der_x509_certificate(job.certificate),
        chain,
        job.friendly_name,
        job.password,
        job.profile,
    )


def _die_with_parent(parent: int, start_method: str) -> None:
    """Runs first in each worker. A worker outlives a killed apply otherwise (SIGKILL cannot be
    caught, and the workers wait on a pipe their siblings keep open), holding the apply's
    output pipes open forever: on Linux the kernel now kills it with its parent (the apply,
    or with the forkserver start method the server, which ends with the apply)."""
    # Ctrl-C reaches the whole process group: the apply handles it, its workers must not
    # (each would print a traceback); they end with the pool or with the apply.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if start_method in ("fork", "spawn") and os.getppid() != parent:
        os._exit(1)  # the apply died before the line above


_PR_SET_PDEATHSIG = 1


class Workers:
    """The process pool of one apply (started on first use); in-process with one core."""

    def __init__(self, workers: int | None = None) -> None:
        self.size = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context()
            self._pool = ProcessPoolExecutor(
                max_workers=self.size,
                mp_context=context,
                initializer=_die_with_parent,
                initargs=(os.getpid(), context.get_start_method()),
            )
        return self._pool

    def keys(self, sizes: list[int]) -> Iterator[rsa.RSAPrivateKey]:
        """One key per requested size, yielded in order as soon as each is made.

        Only a few generations are queued ahead (two per worker), so that encodings submitted
        meanwhile run between them instead of after all of them: the copies of the first
        generations are written while the later keys are still being made."""
        if len(sizes) < 2 or self.size < 2:
            for size in sizes:
                yield generate_key(size)
            return
        pool = self._executor()
        ahead: deque[Future[bytes]] = deque()
        pending = iter(sizes)
        for size in islice(pending, 2 * self.size):
            ahead.append(pool.submit(_generate_der, size))
        while ahead:
            der = ahead.popleft().result()
            for size in islice(pending, 1):
                ahead.append(pool.submit(_generate_der, size))
            yield _load(der)

    def encode(self, job: EncodeJob, *, inline: bool = False) -> Future[bytes]:
        """The PKCS#12 of `job`: queued behind the work already submitted, or made here and now
        when `inline` (a few encodings are not worth starting worker processes)."""
        payload = _Payload(
            _der(job.key), job.certificate, job.chain, job.friendly_name, job.password, job.profile
        )
        if self.size < 2 or (inline and self._pool is None):
            done: Future[bytes] = Future()
            try:
                done.set_result(_encode(payload))
            except Exception as exc:  # handed to whoever waits for it
                done.set_exception(exc)
            return done
        return self._executor().submit(_encode, payload)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
