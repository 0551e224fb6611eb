"""Security descriptors of SMB files: reading a file's owner and who may read it, and
setting the protected DACL a private copy gets (MS-DTYP 2.4.6-2.4.7)."""

from __future__ import annotations

from typing import Any

from smbclient._io import SMBFileTransaction, SMBRawIO
from smbprotocol.exceptions import (
    SMBOSError,
)
from smbprotocol.open import (
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

# Security information asked and set (MS-DTYP 2.4.7).
_OWNER, _GROUP, _DACL = 0x1, 0x2, 0x4
_PROTECTED_DACL = 0x80000000
# Rights that let a SID read a file's bytes: FILE_READ_DATA, GENERIC_READ, GENERIC_ALL.
_READS = 0x00000001 | 0x80000000 | 0x10000000
FULL_CONTROL = 0x001F01FF
READ = 0x00120089  # FILE_GENERIC_READ
READ_AND_LIST = 0x001200A9  # FILE_GENERIC_READ | FILE_EXECUTE (traverse), for folders
_INHERIT = 0x01 | 0x02  # OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE


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
