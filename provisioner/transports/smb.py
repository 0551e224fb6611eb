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
import secrets

import smbclient
from smbclient._io import SMBRawIO
from smbprotocol.exceptions import (
    BadNetworkName,
    SMBOSError,
)
from smbprotocol.open import (
    FilePipePrinterAccessMask,
)

from provisioner import faults
from provisioner.atomic import TMP_MARK
from provisioner.errors import ProvisionerError, TransportError
from provisioner.manifest.model import SmbSpec, Target
from provisioner.transports.base import (
    MAX_READ_BYTES,
    FileFacts,
    FolderFacts,
    Leftover,
    folder_facts,
    too_large,
)
from provisioner.transports.smb_acl import owner_and_readers, private_dacl, query_security, set_dacl
from provisioner.transports.smb_connection import (
    SMB_ERRORS,
    SmbConnection,
    reason_of,
    silence_library_logging,
)

_ACCESS_DENIED = 0xC0000022
_NO_SHARE = (0xC00000CC, 0xC0000225)  # BAD_NETWORK_NAME, NOT_FOUND

__all__ = ["SmbConnection", "SmbTransport", "silence_library_logging", "unc"]


def unc(target: Target, path: str = "") -> str:
    r"""`\\host\share\folder\name` for a path inside the share ("/folder/name")."""
    inside = path.strip("/").replace("/", "\\")
    spec = target.spec_of(SmbSpec)
    root = f"\\\\{spec.host}\\{spec.share}"
    return f"{root}\\{inside}" if inside else root


def _missing(exc: SMBOSError) -> bool:
    """No such file or folder. smbclient maps a missing share to ENOENT too (Samba answers
    STATUS_NOT_FOUND to the DFS referral asked for it): that one is not a missing file."""
    return exc.errno == 2 and exc.ntstatus not in _NO_SHARE


class SmbTransport:
    """Files of one target on a shared SMB connection."""

    def __init__(self, target: Target, connection: SmbConnection) -> None:
        self.target = target
        self.spec = target.spec_of(SmbSpec)
        self.conn = connection
        self._folders: set[str] = set()  # folders made or found by this run's writes

    def _fail(self, action: str, path: str, exc: BaseException) -> TransportError:
        if isinstance(exc, ProvisionerError):
            return TransportError(f"{self.target.name}: {exc}")
        if isinstance(exc, (BadNetworkName,)) or (
            isinstance(exc, SMBOSError) and exc.ntstatus in _NO_SHARE
        ):
            return TransportError(
                f"{self.target.name}: the share {self.spec.share!r} does not exist on "
                f"{self.conn.host}"
            )
        return TransportError(
            f"{self.target.name}: cannot {action} {self._show(path)} on {self.conn.host}: "
            f"{reason_of(exc)}"
        )

    def _show(self, path: str) -> str:
        return f"//{self.conn.host}/{self.spec.share}{path}"

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
        except (*SMB_ERRORS, ProvisionerError) as exc:
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
        set_dacl(raw, private_dacl(owner, self.spec.readers, folder=folder))
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
                with contextlib.suppress(*SMB_ERRORS):
                    smbclient.remove(self._unc(tmp), **self.conn.options)
                raise
            return owner

        try:
            owner = self.conn.run(op)
        except (*SMB_ERRORS, ProvisionerError) as exc:
            raise self._fail("write", path, exc) from None
        readers = (owner,) + ((self.spec.readers,) if self.spec.readers else ())
        return FileFacts(
            len(data), hashlib.sha256(data).hexdigest(), 0, owner=owner, readers=readers
        )

    def read(self, path: str) -> bytes:
        def op() -> bytes:
            with smbclient.open_file(self._unc(path), "rb", **self.conn.options) as handle:
                data = bytes(handle.read(MAX_READ_BYTES + 1))
            if len(data) > MAX_READ_BYTES:
                raise TransportError(too_large(path))
            return data

        try:
            return self.conn.run(op)
        except (*SMB_ERRORS, ProvisionerError) as exc:
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
        except (*SMB_ERRORS, ProvisionerError) as exc:
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
        except (*SMB_ERRORS, ProvisionerError) as exc:
            raise self._fail("remove", path, exc) from None

    def observe_folder(self, folder: str) -> FolderFacts | None:
        # One listing per folder. The folder's ACL is not compared: each copy carries its own
        # protected DACL, which the folder's entries do not reach.
        try:
            names = self.conn.run(lambda: self._listdir(folder))
        except (*SMB_ERRORS, ProvisionerError) as exc:
            raise self._fail("list", folder, exc) from None
        return None if names is None else folder_facts(0o700, names, moves_aside=False)

    def secure_folder(self, folder: str) -> None:
        try:
            self.conn.run(lambda: self._protect(folder, folder=True))
        except (*SMB_ERRORS, ProvisionerError) as exc:
            raise self._fail("set the access of", folder, exc) from None

    def clear_leftover(self, folder: str, leftover: Leftover) -> None:
        self.remove(f"{folder}/{leftover.name}")

    def close(self) -> None:
        return None  # the pool closes the shared connection
