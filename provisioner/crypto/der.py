"""A minimal DER reader, enough to name the algorithms inside a PKCS#12 file without a password."""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.errors import CorruptFileError

SEQUENCE = 0x30
OID = 0x06
OCTET_STRING = 0x04
INTEGER = 0x02
CONTEXT_0 = 0xA0


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes


def read_all(data: bytes) -> list[Tlv]:
    """Split `data` into its consecutive TLVs; raise CorruptFileError on malformed input."""
    out: list[Tlv] = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise CorruptFileError("truncated DER")
        tag = data[i]
        length = data[i + 1]
        i += 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4 or i + count > len(data):
                raise CorruptFileError("unsupported or truncated DER length")
            length = int.from_bytes(data[i : i + count], "big")
            i += count
        if i + length > len(data):
            raise CorruptFileError("truncated DER value")
        out.append(Tlv(tag, data[i : i + length]))
        i += length
    return out


def read_one(data: bytes, tag: int | None = None) -> Tlv:
    items = read_all(data)
    if not items or (tag is not None and items[0].tag != tag):
        raise CorruptFileError("unexpected DER structure")
    return items[0]


def children(tlv: Tlv) -> list[Tlv]:
    return read_all(tlv.value)


def oid(tlv: Tlv) -> str:
    """Dotted form of an OBJECT IDENTIFIER."""
    if tlv.tag != OID or not tlv.value:
        raise CorruptFileError("expected an OID")
    first = tlv.value[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in tlv.value[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(p) for p in parts)


def integer(tlv: Tlv) -> int:
    if tlv.tag != INTEGER:
        raise CorruptFileError("expected an INTEGER")
    return int.from_bytes(tlv.value, "big", signed=True)
