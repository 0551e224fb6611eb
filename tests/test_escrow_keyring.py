"""The escrow's keyring through a passphrase rotation, an escrow an older release left (no
lineage recorded, key files of format 1) and a keyring that cannot be written.

What the files hold is read from their documented format (the docstring of state/escrow.py,
tests/oracle.py), never with the code under test; what the user sees is the command's exit
code and its message. Each test starts from the quickstart applied once for the module.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import resource
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tests import oracle
from tests.conftest import EXAMPLES, Runner, run_cli
from tests.engine_helpers import ESCROW_PASSPHRASE, state_rows

NEW_PASSPHRASE = "A-Brand-New-Escrow-Passphrase-2027"
WRAP = ("salt", "nonce", "wrapped")  # what a rotation may change in the keyring


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The quickstart applied once, and a pristine copy of it."""
    folder = tmp_path_factory.mktemp("escrow") / "site"
    folder.mkdir()
    shutil.copy(EXAMPLES / "quickstart.yaml", folder)
    shutil.copytree(EXAMPLES / "secrets", folder / "secrets")
    done = run_cli("apply", "--auto-approve", folder / "quickstart.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    pristine = folder.parent / "pristine"
    shutil.copytree(folder, pristine, symlinks=True)
    return folder, pristine


@pytest.fixture
def site(applied: tuple[Path, Path]) -> Path:
    """The applied quickstart as its first apply left it, in place (the state records
    absolute paths); returns its manifest."""
    folder, pristine = applied
    shutil.rmtree(folder)
    shutil.copytree(pristine, folder, symlinks=True)
    return folder / "quickstart.yaml"


def escrow_dir(manifest: Path) -> Path:
    return manifest.parent / ".provisioner" / "escrow"


def keyring(manifest: Path) -> dict[str, object]:
    value: dict[str, object] = json.loads((escrow_dir(manifest) / "keyring.json").read_bytes())
    return value


def write_keyring(manifest: Path, ring: dict[str, object]) -> None:
    (escrow_dir(manifest) / "keyring.json").write_text(json.dumps(ring))


def state_lineage(manifest: Path) -> str:
    ((value,),) = state_rows(manifest, "SELECT value FROM meta WHERE key = 'lineage'")
    return str(value)


def give_the_state_another_lineage(manifest: Path) -> None:
    """The state.db of another unit put beside this escrow (a restore from the wrong backup)."""
    conn = sqlite3.connect(manifest.parent / ".provisioner" / "state.db")
    with conn:
        conn.execute("UPDATE meta SET value = 'another-lineage' WHERE key = 'lineage'")
    conn.close()


def owners(manifest: Path) -> dict[str, str]:
    """Key fingerprint -> the entity the state records for it."""
    rows = state_rows(manifest, "SELECT key_sha256, entity FROM generations")
    return {str(fp): str(entity) for fp, entity in rows}


def data_key(manifest: Path, passphrase: str = ESCROW_PASSPHRASE) -> bytes:
    """The escrow's data key, unwrapped as the documented format says."""
    ring = keyring(manifest)
    kek = Scrypt(
        salt=base64.b64decode(str(ring["salt"])),
        length=32,
        n=int(str(ring["n"])),
        r=int(str(ring["r"])),
        p=int(str(ring["p"])),
    ).derive(passphrase.encode())
    return AESGCM(kek).decrypt(
        base64.b64decode(str(ring["nonce"])),
        base64.b64decode(str(ring["wrapped"])),
        b"escrow-data-key",
    )


def format_1(fingerprint: str, der: bytes, key: bytes, entity: str) -> bytes:
    """A key file as releases before 0.x wrote it: the fingerprint alone sealed, the entity
    beside it unauthenticated, no lineage nor serial."""
    nonce = b"\x01" * 12
    sealed = AESGCM(key).encrypt(nonce, der, fingerprint.encode("ascii"))
    record = {
        "format": oracle.KEYRING_FORMAT,
        "entity": entity,
        "key_sha256": fingerprint,
        "nonce": base64.b64encode(nonce).decode(),
        "sealed": base64.b64encode(sealed).decode(),
    }
    return json.dumps(record).encode()


def to_format_1(path: Path, key: bytes, entity: str) -> None:
    """Rewrite a key file of the current format as a release before 0.x wrote it."""
    record = json.loads(path.read_bytes())
    aad = b"\0".join(
        (oracle.KEY_FORMAT.encode(), path.stem.encode(), record["entity"].encode("utf-8"))
    )
    der = AESGCM(key).decrypt(
        base64.b64decode(record["nonce"]), base64.b64decode(record["sealed"]), aad
    )
    path.write_bytes(format_1(path.stem, der, key, entity))


def file_format(path: Path) -> str:
    return str(json.loads(path.read_bytes())["format"])


@contextlib.contextmanager
def address_space(extra: int) -> Iterator[None]:
    """At most `extra` more bytes of address space for this process (and the commands it
    starts), so that a command reading a huge file whole fails fast instead of filling memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    limit = pages * resource.getpagesize() + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ---------------------------------------------------------------- passphrase rotation


def test_a_passphrase_rotation_rewraps_the_data_key_and_keeps_the_rest_of_the_keyring(
    cli: Runner, site: Path, tmp_path: Path
) -> None:
    folder = escrow_dir(site)
    before = keyring(site)
    keys = {p.name: p.read_bytes() for p in folder.glob("*.key")}
    escrowed = oracle.escrowed_keys(folder, ESCROW_PASSPHRASE)
    assert len(escrowed) == 2
    new = tmp_path / "new.pass"
    new.write_text(NEW_PASSPHRASE + "\n")
    done = cli("rekey", site, "--new-passphrase-file", new)
    assert done.returncode == 0, done.stdout + done.stderr

    after = keyring(site)
    assert {k: v for k, v in after.items() if k not in WRAP} == {
        k: v for k, v in before.items() if k not in WRAP
    }, "only the wrapping of the data key changes: lineage and key-file format stay"
    assert after["lineage"] == state_lineage(site)
    assert after["salt"] != before["salt"]
    assert oracle.escrowed_keys(folder, NEW_PASSPHRASE) == escrowed
    assert {p.name: p.read_bytes() for p in folder.glob("*.key")} == keys

    # The rotated escrow opens with the new passphrase and still names its state: one of
    # another unit is refused.
    (site.parent / "secrets" / "escrow.pass").write_text(NEW_PASSPHRASE + "\n")
    give_the_state_another_lineage(site)
    refused = cli("plan", site)
    assert refused.returncode == 1
    assert f"{folder}: the escrow belongs to another state" in refused.stderr


def test_a_new_keyring_says_its_key_files_are_current_and_a_no_op_apply_leaves_it_alone(
    cli: Runner, site: Path
) -> None:
    """The first apply's keyring records that its key files are of the current format
    (docs/ARCHITECTURE.md: `key_files`), so no upgrade pass ever runs over them: an apply with
    nothing to do leaves keyring.json and every key file as they were, byte for byte (a
    backup of the state folder sees no change)."""
    folder = escrow_dir(site)
    assert keyring(site)["key_files"] == "provisioner-escrow-key/2"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    again = cli("apply", "--auto-approve", site)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes." in again.stdout, again.stdout
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# ---------------------------------------------------------------- lineage


def test_an_escrow_without_a_lineage_is_given_its_states_at_the_next_apply(
    cli: Runner, site: Path
) -> None:
    """An escrow made before keyrings named their state's lineage: `plan` changes nothing,
    the next apply records the lineage (the rest of the keyring as it was) and seals what it
    restores under it; from then on a state of another unit is refused."""
    folder = escrow_dir(site)
    old = {k: v for k, v in keyring(site).items() if k != "lineage"}
    write_keyring(site, old)
    lost = sorted(folder.glob("*.key"))[0]
    lost.unlink()  # taken back from the shared location by the apply below

    assert cli("plan", site).returncode == 0
    assert keyring(site) == old, "a read-only command writes nothing"

    done = cli("apply", "--auto-approve", site)
    assert done.returncode == 0, done.stdout + done.stderr
    lineage = state_lineage(site)
    assert keyring(site) == dict(old, lineage=lineage)
    assert json.loads(lost.read_bytes())["lineage"] == lineage
    assert set(oracle.escrowed_keys(folder, ESCROW_PASSPHRASE)) == set(owners(site))

    give_the_state_another_lineage(site)
    refused = cli("plan", site)
    assert refused.returncode == 1
    assert f"{folder}: the escrow belongs to another state (lineage {lineage}" in refused.stderr


# ---------------------------------------------------------------- a keyring that cannot be written


@pytest.mark.parametrize("change", ["rekey", "lineage", "upgrade"])
def test_a_keyring_that_cannot_be_written_is_named_and_left_as_it_was(
    cli: Runner, site: Path, tmp_path: Path, change: str
) -> None:
    """keyring.json is a link to a file elsewhere (written through by no command): the
    rotation, recording the lineage, or marking the format-1 upgrade done fails naming it."""
    folder = escrow_dir(site)
    ring = keyring(site)
    if change == "lineage":
        del ring["lineage"]
    elif change == "upgrade":
        del ring["key_files"]
    elsewhere = tmp_path / "keyring.json"
    elsewhere.write_text(json.dumps(ring))
    kept = elsewhere.read_bytes()
    (folder / "keyring.json").unlink()
    (folder / "keyring.json").symlink_to(elsewhere)
    new = tmp_path / "new.pass"
    new.write_text(NEW_PASSPHRASE + "\n")

    if change == "rekey":
        done = cli("rekey", site, "--new-passphrase-file", new)
    else:
        done = cli("apply", "--auto-approve", site)
    assert done.returncode == 1
    assert (
        f"{folder / 'keyring.json'}: cannot write the escrow keyring: refusing to write "
        "through a symlink" in done.stderr
    ), done.stderr
    assert "the file is unchanged" in done.stderr
    assert elsewhere.read_bytes() == kept
    assert len(oracle.escrowed_keys(folder, ESCROW_PASSPHRASE)) == 2


# ---------------------------------------------------------------- format 1 key files


def test_format_1_key_files_are_rewritten_past_current_ones_and_unknown_ones(
    cli: Runner, site: Path
) -> None:
    """An escrow an older release left: its keyring not marked upgraded, the last key file
    (by name) of format 1 with an altered entity claim, an earlier one already current, and
    before both a format-1 key a crash left sealed and never recorded. The next apply
    rewrites the known one with the state's entity sealed in, and leaves the unknown one."""
    folder = escrow_dir(site)
    key = data_key(site)
    first, last = sorted(folder.glob("*.key"))
    to_format_1(last, key, "intrus")
    orphan_key = rsa.generate_private_key(65537, 1024)
    orphan = oracle.fingerprint(orphan_key.public_key())
    while orphan >= first.stem:
        orphan_key = rsa.generate_private_key(65537, 1024)
        orphan = oracle.fingerprint(orphan_key.public_key())
    der = orphan_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    unknown = folder / f"{orphan}.key"
    unknown.write_bytes(format_1(orphan, der, key, "commune-exemple"))
    ring = keyring(site)
    del ring["key_files"]
    write_keyring(site, ring)
    current = first.read_bytes()
    assert oracle.escrowed_keys(folder, ESCROW_PASSPHRASE)[last.stem].entity == "intrus"

    assert cli("plan", site).returncode == 0
    assert file_format(last) == oracle.KEYRING_FORMAT, "a read-only command writes nothing"

    done = cli("apply", "--auto-approve", site)
    assert done.returncode == 0, done.stdout + done.stderr
    assert file_format(last) == oracle.KEY_FORMAT
    escrowed = oracle.escrowed_keys(folder, ESCROW_PASSPHRASE)
    assert escrowed[last.stem].entity == owners(site)[last.stem], "the state's entity"
    assert first.read_bytes() == current
    assert file_format(unknown) == oracle.KEYRING_FORMAT, "a key the state does not know"
    assert keyring(site)["key_files"] == oracle.KEY_FORMAT


def test_a_huge_key_file_is_not_read_whole_and_the_others_are_still_upgraded(
    cli: Runner, site: Path
) -> None:
    """Invariant 13: a key file turned into 64 GiB of zeros (a damaged disk, a hostile hand)
    before a format-1 one: the upgrade reads a bounded head of it, moves on to the next file,
    and apply takes the damaged key back from the shared location."""
    folder = escrow_dir(site)
    key = data_key(site)
    first, last = sorted(folder.glob("*.key"))
    to_format_1(last, key, owners(site)[last.stem])
    ring = keyring(site)
    del ring["key_files"]
    write_keyring(site, ring)
    with first.open("r+b") as handle:
        handle.truncate(0)
        handle.truncate(64 << 30)  # sparse: nothing is written to the disk

    with address_space(2 << 30):
        done = cli("apply", "--auto-approve", site)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "generation 1: restore escrowed key from backup-share" in done.stdout
    assert file_format(last) == oracle.KEY_FORMAT
    assert set(oracle.escrowed_keys(folder, ESCROW_PASSPHRASE)) == {first.stem, last.stem}


def test_a_garbled_keyring_is_named_by_the_commands_that_read_no_secret(
    cli: Runner, quickstart: Path
) -> None:
    """keyring.json overwritten with something that is not JSON: `status` (exit 1) and the
    monitoring probe (UNKNOWN, 3) name the file and say they cannot read it, no traceback."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    keyring = quickstart.parent / ".provisioner" / "escrow" / "keyring.json"
    keyring.write_text("{not json")
    said = f"{keyring}: cannot read the escrow keyring: "
    status = cli("status", quickstart)
    assert status.returncode == 1 and f"Error: {said}" in status.stderr, status.stderr
    probe = cli("check", quickstart)
    assert probe.returncode == 3 and f"PROVISIONER UNKNOWN - {said}" in probe.stdout, probe.stdout
    assert "Traceback" not in status.stderr + probe.stderr


def test_a_state_lost_beside_an_escrow_from_before_serials_is_recovered_without_moving_it(
    cli: Runner, site: Path
) -> None:
    """An escrow an older release left (every key file of format 1: no lineage nor serial)
    survives the loss of state.db. recover takes the state back from it and the copies, and
    says nothing of moving the state's change number: no key of that escrow was sealed
    at one."""
    folder = escrow_dir(site)
    key = data_key(site)
    entities = owners(site)
    for path in folder.glob("*.key"):
        to_format_1(path, key, entities[path.stem])
    ring = keyring(site)
    del ring["key_files"]
    write_keyring(site, ring)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (site.parent / ".provisioner" / name).unlink(missing_ok=True)
    done = cli("recover", "--auto-approve", site)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 generations, 5 copies" in done.stdout, done.stdout
    assert "serial" not in done.stdout, done.stdout
    assert cli("plan", "--detailed-exitcode", site).returncode == 0


def rewrapped(manifest: Path, n: int, r: int, p: int) -> dict[str, object]:
    """The keyring with its data key wrapped again under scrypt(n, r, p), as the documented
    format says (a keyring another release, or an administrator's tuning, could have made)."""
    key = data_key(manifest)
    ring = keyring(manifest)
    salt = base64.b64decode(str(ring["salt"]))
    password = ESCROW_PASSPHRASE.encode()
    kek = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=2**31 - 1, dklen=32)
    nonce = os.urandom(12)
    wrapped = AESGCM(kek).encrypt(nonce, key, b"escrow-data-key")
    return dict(
        ring,
        n=n,
        r=r,
        p=p,
        nonce=base64.b64encode(nonce).decode(),
        wrapped=base64.b64encode(wrapped).decode(),
    )


# Each bound of the keyring's scrypt parameters, at the bound (opened) and one step past it
# (refused before any key derivation): n a power of two from 2 to 2^20 and below 2^(16 r)
# (scrypt's own rule: n = 2^20 with r = 1 was an internal error), r from 1 to 32, p from 1
# to 16, and at most 1 GiB of memory (128 * n * r bytes).
@pytest.mark.parametrize(
    ("n", "r", "p", "opens"),
    [
        (2, 1, 1, True),
        (2**15, 1, 1, True),
        (2**16, 1, 1, False),
        (2**20, 2, 1, True),
        (2, 32, 1, True),
        (2, 1, 16, True),
        (2**18, 32, 1, True),  # exactly 1 GiB
        (1, 1, 1, False),
        (2**21, 2, 1, False),
        (6, 1, 1, False),
        (2, 0, 1, False),
        (2, 33, 1, False),
        (2, 1, 0, False),
        (2, 1, 17, False),
        (2**19, 32, 1, False),  # 2 GiB
    ],
)
def test_a_keyring_is_opened_within_its_scrypt_bounds_and_refused_past_them(
    cli: Runner, site: Path, n: int, r: int, p: int, opens: bool
) -> None:
    write_keyring(site, rewrapped(site, n, r, p) if opens else dict(keyring(site), n=n, r=r, p=p))
    done = cli("apply", "--auto-approve", site)
    if opens:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "No changes." in done.stdout, done.stdout
        return
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"the keyring's scrypt parameters (n={n}, r={r}, p={p}) are out of bounds" in done.stderr
    ), done.stderr


def test_a_keyring_asking_absurd_costs_is_refused_with_the_bounds_and_the_remedy(
    cli: Runner, site: Path
) -> None:
    """A keyring naming scrypt costs of 26 digits (damaged, or not written by this tool): the
    apply refuses it before deriving anything, quoting each value cut at 20 characters, the
    bounds, what this tool writes and where to restore it from, word for word."""
    n, r, p = 10**25, 2 * 10**25, 3 * 10**25
    write_keyring(site, dict(keyring(site), n=n, r=r, p=p))
    done = cli("apply", "--auto-approve", site)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"Error: {escrow_dir(site) / 'keyring.json'}: the keyring's scrypt parameters "
        "(n=10000000000000000000, r=20000000000000000000, p=30000000000000000000) are out of "
        "bounds: n must be a power of two up to 2^20 and below 2^(16 r), r at most 32, p at "
        "most 16, using at most 1 GiB (this tool writes n=2^15, r=8, p=1). The keyring is "
        "damaged or was not written by provisioner: restore the escrow folder from a backup "
        "(docs/RECOVERY.md)\n"
    ) in done.stderr, done.stderr


def test_a_first_apply_that_cannot_write_its_keyring_names_it_and_leaves_no_state(
    cli: Runner, tmp_path: Path
) -> None:
    """keyring.json is a dangling link before the first apply (a share not mounted): the
    apply stops naming the file and why, and leaves no state, no key and no copy behind, so
    that the next apply, once the link is gone, starts as a first one."""
    shutil.copy(EXAMPLES / "quickstart.yaml", tmp_path)
    shutil.copytree(EXAMPLES / "secrets", tmp_path / "secrets")
    manifest = tmp_path / "quickstart.yaml"
    folder = escrow_dir(manifest)
    folder.mkdir(parents=True)
    (folder / "keyring.json").symlink_to(tmp_path / "not-mounted" / "keyring.json")
    done = cli("apply", "--auto-approve", manifest)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"Error: {folder / 'keyring.json'}: cannot write the escrow keyring: refusing to write "
        "through a symlink"
    ) in done.stderr, done.stderr
    assert not (tmp_path / ".provisioner" / "state.db").exists(), "a state without its escrow"
    assert [p.name for p in folder.iterdir()] == ["keyring.json"]
    assert not (tmp_path / "demo-out").exists()
    (folder / "keyring.json").unlink()
    again = cli("apply", "--auto-approve", "-q", manifest)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(oracle.escrowed_keys(folder, ESCROW_PASSPHRASE)) == 2


def test_a_created_escrow_names_its_lineage_and_needs_no_upgrade(tmp_path: Path) -> None:
    """`Escrow.create` returns the escrow as its keyring says: its state's lineage, and key
    files already of the current format (no upgrade pass over them)."""
    from provisioner.state.escrow import Escrow

    made = Escrow.create(tmp_path / "escrow", ESCROW_PASSPHRASE, "lineage-1")
    assert made.lineage == "lineage-1"
    assert not made.needs_upgrade
    opened = Escrow.unlock(tmp_path / "escrow", ESCROW_PASSPHRASE)
    assert (opened.lineage, opened.needs_upgrade) == ("lineage-1", False)


@pytest.mark.parametrize("damage", ["format", "passphrase", "salt"])
def test_a_keyring_that_does_not_open_is_named_with_what_is_wrong(
    cli: Runner, site: Path, damage: str
) -> None:
    """An apply that cannot open the escrow's keyring stops before anything is written and
    says which file and what is wrong with it: a format this release does not know (quoted,
    cut at 40 characters), a passphrase that does not open it, a field that is not what the
    format says."""
    keyring_path = escrow_dir(site) / "keyring.json"
    ring = keyring(site)
    if damage == "format":
        unknown = "provisioner-escrow/99 " + "x" * 60
        write_keyring(site, dict(ring, format=unknown))
        said = f"Error: {keyring_path}: unknown escrow format {unknown[:40]!r}\n"
    elif damage == "passphrase":
        (site.parent / "secrets" / "escrow.pass").write_text("Another-Passphrase-99\n")
        said = (
            f"Error: {keyring_path}: wrong escrow passphrase: file secrets/escrow.pass, which "
            "escrow.passphrase names, does not open it."
        )
    else:
        write_keyring(site, dict(ring, salt="not base64!"))
        said = f"Error: {keyring_path}: cannot read the escrow keyring: "
    before = {p.name: p.read_bytes() for p in escrow_dir(site).iterdir()}
    done = cli("apply", "--auto-approve", site)
    assert done.returncode == 1, done.stdout + done.stderr
    assert said in done.stderr, done.stderr
    assert {p.name: p.read_bytes() for p in escrow_dir(site).iterdir()} == before
