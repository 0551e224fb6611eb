"""The smb transport: an SMB2/3 share (Windows file server, NAS, Samba) through smbprotocol.

Security: the session is signed (required) and, unless the target says `encrypt: false`,
encrypted with SMB3 (required: a server that cannot encrypt is refused). Authentication is NTLM
with the user and the password a secret reference gives; Kerberos is not offered (smbprotocol
needs the system's GSSAPI/krb5 libraries and a keytab or ticket for it: docs/SECURITY.md).

Writes are atomic and private: the temporary `.provisioner-tmp-<name>.<hex>` is created empty
(refused if the name exists), its ACL (security descriptor) is set before any byte is written:
a protected DACL granting full control to the tool's account (the owner the server gave the new
file) and read access to the `readers` group if the manifest names one, nothing else and no
inherited entry; then the bytes, a size check, and a rename with ReplaceIfExists over the final
name (one SET_INFO on the server: the old copy or the new one, never half of one). Leftovers of
an interrupted write are reported by `plan` and cleared by the next apply.

Observation reads the file's size, SHA-256 and security descriptor: its owner and every SID an
allow entry lets read the data. Where the server gives no security descriptor (`nt acl support
= no` on Samba, some NAS), `readers` is empty: nothing can be checked, docs/SECURITY.md says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import smbclient
from smbclient._io import SMBFileTransaction, SMBRawIO
from smbprotocol.exceptions import (
    BadNetworkName,
    LogonFailure,
    SMBAuthenticationError,
    SMBException,
    SMBOSError,
    SMBResponseException,
)
from smbprotocol.open import (
    FilePipePrinterAccessMask,
    InfoType,
    SMB2QueryInfoRequest,
    SMB2QueryInfoResponse,
    SMB2SetInfoRequest,
)
from smbprotocol.security_descriptor import (
    AccessAllowedAce,
    AceType,
    AclPacket,
    SDControl,
    SIDPacket,
    SMB2CreateSDBuffer,
)

from provisioner import faults
from provisioner.atomic import TMP_MARK
from provisioner.errors import ProvisionerError, TransportError
from provisioner.manifest.model import Target
from provisioner.transports.base import FileFacts, FolderFacts, Leftover, folder_facts

CONNECT_ATTEMPTS = 3
OPERATION_TIMEOUT = 60.0
T = TypeVar("T")

# Security information asked and set (MS-DTYP 2.4.7).
_OWNER, _GROUP, _DACL = 0x1, 0x2, 0x4
_PROTECTED_DACL = 0x80000000
# Rights that let a SID read a file's bytes: FILE_READ_DATA, GENERIC_READ, GENERIC_ALL.
_READS = 0x00000001 | 0x80000000 | 0x10000000
FULL_CONTROL = 0x001F01FF
READ = 0x00120089  # FILE_GENERIC_READ
READ_AND_LIST = 0x001200A9  # FILE_GENERIC_READ | FILE_EXECUTE (traverse), for folders
_INHERIT = 0x01 | 0x02  # OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE

_ACCESS_DENIED = 0xC0000022
_NO_SHARE = (0xC00000CC, 0xC0000225)  # BAD_NETWORK_NAME, NOT_FOUND
_ERRORS = (OSError, SMBException, ValueError, EOFError)


def unc(target: Target, path: str = "") -> str:
    r"""`\\host\share\folder\name` for a path inside the share ("/folder/name")."""
    inside = path.strip("/").replace("/", "\\")
    root = f"\\\\{target.host}\\{target.share}"
    return f"{root}\\{inside}" if inside else root


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SMBOSError):
        return exc.strerror or str(exc)
    if isinstance(exc, SMBResponseException):
        return exc.message.split(": ", 1)[-1] if exc.message else type(exc).__name__
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def silence_library_logging() -> None:
    """smbprotocol logs a dropped connection from its receiver thread through Python's
    last-resort handler (stderr); the transport reports failures itself, one line per target."""
    for name in ("smbprotocol", "smbclient", "spnego"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
        logger.propagate = False


class SmbConnection:
    """One SMB connection and session to a server, for one account, shared by every target
    on it (smbprotocol multiplexes the trees of several shares on it)."""

    def __init__(self, target: Target, password: str) -> None:
        self.host = target.host or ""
        self.port = target.port
        self.user = target.user or ""
        self.encrypt = target.encrypt
        self.timeout = target.connect_timeout
        self._password = password
        self.lock = threading.RLock()
        self.cache: dict[str, Any] = {}
        self.connected = False
        silence_library_logging()

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def options(self) -> dict[str, Any]:
        """What every smbclient call gets: this connection's own cache and credentials."""
        return {
            "username": self.user,
            "password": self._password,
            "port": self.port,
            "encrypt": self.encrypt,
            "connection_timeout": self.timeout,
            "connection_cache": self.cache,
            "auth_protocol": "ntlm",
            "require_signing": True,
        }

    def connect(self) -> None:
        """Open the session, with bounded retries for transient faults (a reset while the
        server starts); a refused password or a missing share fails at once."""
        with self.lock:
            if self.connected:
                return
            delay = 0.5
            for attempt in range(1, CONNECT_ATTEMPTS + 1):
                started = time.monotonic()
                try:
                    smbclient.register_session(self.host, **self.options)
                    self._bound_waits()
                    self.connected = True
                    return
                except (LogonFailure, SMBAuthenticationError):
                    self._reset()
                    raise TransportError(
                        f"authentication refused for {self.name} (wrong user or password?)"
                    ) from None
                except _ERRORS as exc:
                    self._reset()
                    why = _reason(exc.__cause__ or exc) if isinstance(exc, ValueError) else ""
                    why = why or _reason(exc)
                    refused = "refused" in why.lower()
                    timed_out = time.monotonic() - started >= self.timeout
                    if "encrypt" in why.lower():
                        raise TransportError(
                            f"{self.name}: the server cannot encrypt (SMB3 encryption is "
                            "required; `encrypt: false` only on a network you trust)"
                        ) from None
                    if timed_out or "timeout" in why.lower():
                        raise TransportError(
                            f"cannot connect to {self.host}:{self.port}: no SMB answer within "
                            f"{self.timeout:g} s"
                        ) from None
                    if refused or attempt == CONNECT_ATTEMPTS:
                        tries = "" if refused else f" after {attempt} attempts"
                        raise TransportError(
                            f"cannot connect to {self.host}:{self.port}{tries}: {why}"
                        ) from None
                    time.sleep(delay)
                    delay *= 2
            raise AssertionError("unreachable")

    def _bound_waits(self) -> None:
        """A server that stops answering mid-operation fails it within about OPERATION_TIMEOUT
        s: smbprotocol's receiver sends an echo after a silence of `_receive_timeout` (600 s by
        default) and closes the connection, failing what waits on it, when that echo too goes
        unanswered; half the operation timeout each."""
        for connection in self.cache.values():
            if hasattr(connection, "_receive_timeout"):
                connection._receive_timeout = max(1, int(OPERATION_TIMEOUT / 2))

    def run(self, op: Callable[[], T]) -> T:
        """Run an operation; if the connection died (server restarted), reconnect once.
        Operations are serialised on the connection: run at once from several threads,
        smbprotocol fails them with "requires 1 credits but only 0 credits are available"
        (measured with --parallel 8 on Samba 4.17)."""
        self.connect()
        try:
            with self.lock:
                return op()
        except _ERRORS as exc:
            if not _dead_link(exc):
                raise
            self._reset()
            self.connect()
            with self.lock:
                return op()

    def _reset(self) -> None:
        with self.lock:
            with contextlib.suppress(*_ERRORS):
                smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self.cache)
            self.cache.clear()
            self.connected = False

    def close(self) -> None:
        self._reset()


def _missing(exc: SMBOSError) -> bool:
    """No such file or folder. smbclient maps a missing share to ENOENT too (Samba answers
    STATUS_NOT_FOUND to the DFS referral asked for it): that one is not a missing file."""
    return exc.errno == 2 and exc.ntstatus not in _NO_SHARE


def _dead_link(exc: BaseException) -> bool:
    if isinstance(exc, SMBOSError):
        return False  # a file status (not found, denied, in use...)
    if isinstance(exc, (ConnectionError, EOFError, socket.timeout, TimeoutError)):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("connection", "closed", "session", "socket", "broken pipe"))


# ---------------------------------------------------------------- security descriptors


def query_security(raw: SMBRawIO) -> SMB2CreateSDBuffer | None:
    """The security descriptor (owner, group, DACL) of an open file; None when the server
    gives none."""
    request = SMB2QueryInfoRequest()
    request["info_type"] = InfoType.SMB2_0_INFO_SECURITY
    request["output_buffer_length"] = 65536
    request["additional_information"] = _OWNER | _GROUP | _DACL
    request["file_id"] = raw.fd.file_id

    def receive(sent: Any) -> bytes:
        response = raw.fd.connection.receive(sent)
        parsed = SMB2QueryInfoResponse()
        parsed.unpack(response["data"].get_value())
        return bytes(parsed["buffer"].get_value())

    transaction = SMBFileTransaction(raw)
    transaction += (request, receive)
    try:
        transaction.commit()
    except SMBOSError as exc:
        if exc.ntstatus in (0xC00000BB, 0xC0000002):  # NOT_SUPPORTED, NOT_IMPLEMENTED
            return None
        raise
    data = transaction.results[0] if transaction.results else b""
    if not data:
        return None
    descriptor = SMB2CreateSDBuffer()
    descriptor.unpack(data)
    return descriptor


def _sid(text: str) -> SIDPacket:
    sid = SIDPacket()
    sid.from_string(text)
    return sid


def _ace(sid: str, mask: int, flags: int = 0) -> AccessAllowedAce:
    ace = AccessAllowedAce()
    ace["ace_flags"] = flags
    ace["mask"] = mask
    ace["sid"] = _sid(sid)
    return ace


def private_dacl(owner: str, readers: str | None, *, folder: bool = False) -> bytes:
    """A self-relative security descriptor holding only a protected DACL: full control to
    `owner`, read to `readers` (read and traverse for a folder, inherited by what it holds)."""
    flags = _INHERIT if folder else 0
    aces = [_ace(owner, FULL_CONTROL, flags)]
    if readers is not None and readers != owner:
        aces.append(_ace(readers, READ_AND_LIST if folder else READ, flags))
    acl = AclPacket()
    acl["aces"] = aces
    descriptor = SMB2CreateSDBuffer()
    descriptor["control"].set_flag(SDControl.SELF_RELATIVE)
    descriptor["control"].set_flag(SDControl.DACL_PROTECTED)
    descriptor.set_dacl(acl)
    return bytes(descriptor.pack())


def set_dacl(raw: SMBRawIO, descriptor: bytes) -> None:
    request = SMB2SetInfoRequest()
    request["info_type"] = InfoType.SMB2_0_INFO_SECURITY
    request["file_info_class"] = 0
    # Windows applies the descriptor's "protected" flag only when asked for it explicitly
    # (smbprotocol's flag list lacks PROTECTED_DACL_SECURITY_INFORMATION).
    request["additional_information"].flag_strict = False
    request["additional_information"] = _DACL | _PROTECTED_DACL
    request["file_id"] = raw.fd.file_id
    request["buffer"] = descriptor

    def receive(sent: Any) -> None:
        raw.fd.connection.receive(sent)

    transaction = SMBFileTransaction(raw)
    transaction += (request, receive)
    transaction.commit()


def owner_and_readers(descriptor: SMB2CreateSDBuffer | None) -> tuple[str, tuple[str, ...]]:
    """The owner SID and the SIDs an allow entry lets read the data (deny entries are not
    subtracted: a reader they exclude is still reported, the safe side)."""
    if descriptor is None:
        return "", ()
    owner = descriptor.get_owner()
    dacl = descriptor.get_dacl()
    readers: list[str] = []
    if dacl is None:  # no DACL at all: everyone has every right
        return str(owner or ""), ("S-1-1-0",)
    for ace in dacl["aces"].get_value():
        if not isinstance(ace, AccessAllowedAce):
            continue
        if ace["ace_type"].get_value() != AceType.ACCESS_ALLOWED_ACE_TYPE:
            continue
        if ace["ace_flags"].get_value() & 0x08:  # INHERIT_ONLY: not this file's
            continue
        if ace["mask"].get_value() & _READS:
            readers.append(str(ace["sid"].get_value()))
    return str(owner or ""), tuple(dict.fromkeys(readers))


# ---------------------------------------------------------------- the transport


class SmbTransport:
    """Files of one target on a shared SMB connection."""

    def __init__(self, target: Target, connection: SmbConnection) -> None:
        self.target = target
        self.conn = connection
        self._folders: set[str] = set()  # folders made or found by this run's writes

    def _fail(self, action: str, path: str, exc: BaseException) -> TransportError:
        if isinstance(exc, ProvisionerError):
            return TransportError(f"{self.target.name}: {exc}")
        if isinstance(exc, (BadNetworkName,)) or (
            isinstance(exc, SMBOSError) and exc.ntstatus in _NO_SHARE
        ):
            return TransportError(
                f"{self.target.name}: the share {self.target.share!r} does not exist on "
                f"{self.conn.host}"
            )
        return TransportError(
            f"{self.target.name}: cannot {action} {self._show(path)} on {self.conn.host}: "
            f"{_reason(exc)}"
        )

    def _show(self, path: str) -> str:
        return f"//{self.conn.host}/{self.target.share}{path}"

    def _unc(self, path: str) -> str:
        return unc(self.target, path)

    def _open(self, path: str, mode: str, access: int) -> SMBRawIO:
        raw: SMBRawIO = smbclient.open_file(
            self._unc(path), mode, buffering=0, desired_access=access, **self.conn.options
        )
        return raw

    def observe(self, path: str) -> FileFacts | None:
        def op() -> FileFacts | None:
            try:
                info = smbclient.lstat(self._unc(path), **self.conn.options)
            except SMBOSError as exc:
                if _missing(exc):
                    return None
                raise
            special = info.st_file_attributes & (0x10 | 0x400)  # DIRECTORY, REPARSE_POINT
            if special:
                return FileFacts(info.st_size, "", 0, symlink=True)
            access = (
                FilePipePrinterAccessMask.FILE_READ_DATA
                | FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES
                | FilePipePrinterAccessMask.READ_CONTROL
            )
            raw = self._open(path, "rb", access)
            try:
                digest = hashlib.sha256()
                size = 0
                while chunk := raw.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                owner, readers = owner_and_readers(query_security(raw))
            finally:
                raw.close()
            return FileFacts(size, digest.hexdigest(), 0, owner=owner, readers=readers)

        try:
            return self.conn.run(op)
        except (*_ERRORS, ProvisionerError) as exc:
            raise self._fail("inspect", path, exc) from None

    def _makedirs(self, folder: str) -> None:
        if folder in self._folders:
            return
        current = ""
        for part in folder.strip("/").split("/"):
            if not part:
                continue
            current = f"{current}/{part}"
            try:
                smbclient.mkdir(self._unc(current), **self.conn.options)
            except SMBOSError as exc:
                if exc.errno != 17:  # EEXIST
                    raise
                continue
            self._protect(current, folder=True)
        self._folders.add(folder)

    def _protect(self, path: str, *, folder: bool = False) -> None:
        """Give `path` the private DACL (the owner the server gave it, the readers group)."""
        access = FilePipePrinterAccessMask.READ_CONTROL | FilePipePrinterAccessMask.WRITE_DAC
        raw = smbclient.open_file(
            self._unc(path),
            "rb",
            buffering=0,
            desired_access=access,
            file_type="dir" if folder else "file",
            **self.conn.options,
        )
        try:
            self._set_private(raw, folder=folder)
        finally:
            raw.close()

    def _set_private(self, raw: SMBRawIO, *, folder: bool = False) -> str:
        """Set the private DACL on an open file; returns its owner (the tool's account)."""
        owner, _ = owner_and_readers(query_security(raw))
        if not owner:
            raise OSError(
                "the server reports no security descriptor: the file's access cannot be set "
                "(Samba: nt acl support = yes)"
            )
        set_dacl(raw, private_dacl(owner, self.target.readers, folder=folder))
        return owner

    def write(self, path: str, data: bytes) -> FileFacts:
        folder, _, name = path.rpartition("/")

        def op() -> str:
            try:
                info = smbclient.lstat(self._unc(path), **self.conn.options)
                if info.st_file_attributes & (0x10 | 0x400):
                    raise TransportError(
                        f"something that is not a file stands at {self._show(path)}; move it away"
                    )
            except SMBOSError as exc:
                if not _missing(exc):
                    raise
            self._makedirs(folder)
            tmp = f"{folder}/{TMP_MARK}{name}.{secrets.token_hex(4)}"
            access = (
                FilePipePrinterAccessMask.FILE_WRITE_DATA
                | FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES
                | FilePipePrinterAccessMask.READ_CONTROL
                | FilePipePrinterAccessMask.WRITE_DAC
                | FilePipePrinterAccessMask.DELETE
            )
            try:
                raw = self._open(tmp, "xb", access)  # refused if the name exists
                try:
                    # The ACL before the first byte: no byte is ever in a file others may read.
                    owner = self._set_private(raw)
                    view = memoryview(data)
                    while view:
                        written = raw.write(view[: 1 << 16]) or 0
                        view = view[written:]
                finally:
                    raw.close()
                size = smbclient.stat(self._unc(tmp), **self.conn.options).st_size
                if size != len(data):
                    raise OSError(f"short write ({size} of {len(data)} bytes; disk full?)")
                faults.reached("smb-uploaded")
                try:
                    smbclient.replace(self._unc(tmp), self._unc(path), **self.conn.options)
                except SMBOSError as exc:
                    if exc.ntstatus != _ACCESS_DENIED:
                        raise
                    # The copy in place lost the owner's DELETE right (an ACL loosened or
                    # rewritten by hand): the owner may always set the ACL back, then replace.
                    self._protect(path)
                    smbclient.replace(self._unc(tmp), self._unc(path), **self.conn.options)
            except BaseException:
                with contextlib.suppress(*_ERRORS):
                    smbclient.remove(self._unc(tmp), **self.conn.options)
                raise
            return owner

        try:
            owner = self.conn.run(op)
        except (*_ERRORS, ProvisionerError) as exc:
            raise self._fail("write", path, exc) from None
        readers = (owner,) + ((self.target.readers,) if self.target.readers else ())
        return FileFacts(
            len(data), hashlib.sha256(data).hexdigest(), 0, owner=owner, readers=readers
        )

    def read(self, path: str) -> bytes:
        def op() -> bytes:
            with smbclient.open_file(self._unc(path), "rb", **self.conn.options) as handle:
                return bytes(handle.read())

        try:
            return self.conn.run(op)
        except (*_ERRORS, ProvisionerError) as exc:
            raise self._fail("read", path, exc) from None

    def _listdir(self, folder: str) -> list[str] | None:
        try:
            return sorted(smbclient.listdir(self._unc(folder), **self.conn.options))
        except SMBOSError as exc:
            if _missing(exc) or exc.errno == 20:  # ENOTDIR
                return None
            raise

    def names(self) -> list[str]:
        try:
            return self.conn.run(lambda: self._listdir(self.target.path) or [])
        except (*_ERRORS, ProvisionerError) as exc:
            raise self._fail("list", self.target.path, exc) from None

    def remove(self, path: str) -> None:
        def op() -> None:
            try:
                smbclient.remove(self._unc(path), **self.conn.options)
            except SMBOSError as exc:
                if not _missing(exc):
                    raise

        try:
            self.conn.run(op)
        except (*_ERRORS, ProvisionerError) as exc:
            raise self._fail("remove", path, exc) from None

    def observe_folder(self, folder: str) -> FolderFacts | None:
        # One listing per folder. The folder's ACL is not compared: each copy carries its own
        # protected DACL, which the folder's entries do not reach.
        try:
            names = self.conn.run(lambda: self._listdir(folder))
        except (*_ERRORS, ProvisionerError) as exc:
            raise self._fail("list", folder, exc) from None
        return None if names is None else folder_facts(0o700, names, moves_aside=False)

    def secure_folder(self, folder: str) -> None:
        try:
            self.conn.run(lambda: self._protect(folder, folder=True))
        except (*_ERRORS, ProvisionerError) as exc:
            raise self._fail("set the access of", folder, exc) from None

    def clear_leftover(self, folder: str, leftover: Leftover) -> None:
        self.remove(f"{folder}/{leftover.name}")

    def close(self) -> None:
        return None  # the pool closes the shared connection
