"""Names, designations and entity ids: no control, format (bidi, zero-width) or separator
character, file names Windows and POSIX both accept, Windows paths refused on local targets;
and the escrow authenticates the entity it reads back."""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.errors import ManifestError
from provisioner.manifest.loader import read_manifest
from provisioner.plan.planner import copy_file_name, parse_copy_name
from provisioner.state.escrow import Escrow
from tests.conftest import Runner
from tests.engine_helpers import ESCROW_PASSPHRASE

HEAD = "version: 1\nescrow: {passphrase: {env: E}}\nentities:\n"


def one_entity(tmp_path: Path, entity: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + f"  - {entity}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("entity", "expected"),
    [
        (
            '{id: a, name: "Ville\\u202eA", key: {designation: A}, password: {env: P}}',
            "m.yaml:4:19: error: entities[0].name: name contains control characters: U+202E "
            "RIGHT-TO-LEFT OVERRIDE (a format character: bidi or zero-width)",
        ),
        (
            '{id: a, name: A, key: {designation: "A\\u200dB"}, password: {env: P}}',
            "m.yaml:4:41: error: entities[0].key.designation: designation contains control "
            "characters: U+200D ZERO WIDTH JOINER",
        ),
        (
            '{id: a, name: A, key: {designation: "A\\0B"}, password: {env: P}}',
            "m.yaml:4:41: error: entities[0].key.designation: designation contains control "
            "characters: U+0000 (a control character)",
        ),
        (
            '{id: a, name: A, key: {designation: A, common_name: "A\\u2028"}, password: {env: P}}',
            "entities[0].key.common_name: common_name contains control characters: U+2028 LINE "
            "SEPARATOR",
        ),
        (
            "{id: nul, name: A, key: {designation: A}, password: {env: P}}",
            "m.yaml:4:10: error: entities[0].id: entity id 'nul' is a reserved device name on "
            "Windows",
        ),
        (
            "{id: lpt9.archive, name: A, key: {designation: A}, password: {env: P}}",
            "entity id 'lpt9.archive' is a reserved device name on Windows",
        ),
        (
            "{id: mairie., name: A, key: {designation: A}, password: {env: P}}",
            "entity id 'mairie.' ends with a dot or a space, which Windows drops",
        ),
    ],
)
def test_hostile_names_are_refused_with_their_place(
    cli: Runner, tmp_path: Path, entity: str, expected: str
) -> None:
    one_entity(tmp_path, entity)
    done = cli("validate", "m.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert "\u202e" not in done.stderr and "\x00" not in done.stderr, "never echoed raw"


def test_a_windows_path_on_a_local_target_is_refused(cli: Runner, tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(
        HEAD.replace("entities:\n", "inventory:\n  workstations:\n")
        + "    - {name: poste, transport: local, path: 'C:\\Users\\agent\\Bicles'}\n"
        + "entities:\n  - {id: a, name: A, key: {designation: A}, password: {env: P},"
        " workstations: [poste]}\n"
    )
    done = cli("validate", "m.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert (
        "m.yaml:5:45: error: inventory.workstations[0].path: 'C:\\\\Users\\\\agent\\\\Bicles' is "
        "a Windows path: local paths are on this machine" in done.stderr
    )
    assert not list(tmp_path.glob("C:*")), "no folder with that literal name"


# Windows' reserved device names (Microsoft's "Naming Files, Paths, and Namespaces").
RESERVED = {"con", "prn", "aux", "nul"} | {f"{d}{i}" for d in ("com", "lpt") for i in range(1, 10)}


def _safe_file_name(name: str) -> bool:
    stem = name.split(".", 1)[0].casefold()
    return (
        stem not in RESERVED
        and not name.endswith((".", " "))
        and not set(name) & set('<>:"/\\|?*')
        and name.isprintable()
        and len(name.encode()) <= 255
    )


HOSTILE = st.sampled_from(
    [
        "\u202e",
        "\u200b",
        "\u200d",
        "\ufeff",
        "\x00",
        "\x07",
        "\x1b[31m",
        "\u2028",
        "\u0085",
        "\ud800",
        "con",
        "CON",
        "nul.txt",
        "com1",
        "lpt3.x",
        ".",
        " ",
        "..",
        "/",
        "\\",
        "C:",
        "é",
        "{n}",
        "a" * 70,
    ]
)
TEXT = st.lists(HOSTILE | st.text(max_size=5), max_size=6).map("".join)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    entity_id=st.sampled_from(["ville", "con", "nul.txt", "com1", "lpt3.x", "a.", "aux-1"]) | TEXT,
    name=TEXT,
    designation=TEXT,
    common_name=TEXT,
)
def test_hostile_names_never_crash_and_never_make_an_unsafe_file(
    tmp_path: Path, entity_id: str, name: str, designation: str, common_name: str
) -> None:
    path = tmp_path / "m.yaml"
    entity = {
        "id": entity_id,
        "name": name,
        "key": {"designation": designation, "common_name": common_name},
        "password": {"env": "P"},
    }
    # JSON is YAML: every string arrives as written, escapes included (\u0000, lone surrogates).
    document = {"version": 1, "escrow": {"passphrase": {"env": "E"}}, "entities": [entity]}
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    try:
        manifest, _ = read_manifest(path)
    except ManifestError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:
            assert d.location.file == str(path) and d.location.line is not None, str(d)
        return
    built = manifest.entities[0]
    assert _safe_file_name(copy_file_name(built.id, 1))
    for text in (
        built.name,
        built.key.designation_for(1, 2026),
        built.key.common_name_for(1, 2026),
    ):
        assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in text)


# ---------------------------------------------------------------- escrow fields


def _key_files(quickstart: Path) -> list[Path]:
    return sorted((quickstart.parent / ".provisioner" / "escrow").glob("*.key"))


def test_escrow_entity_field_is_authenticated(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    escrow = Escrow.unlock(quickstart.parent / ".provisioner" / "escrow", ESCROW_PASSPHRASE)
    path = _key_files(quickstart)[0]
    record = json.loads(path.read_text())
    fingerprint = path.stem
    read = escrow.read(fingerprint)
    assert read.entity == record["entity"] and read.authenticated
    # Someone with write access to the escrow moves the key to another entity.
    other = "syndicat-eaux" if record["entity"] == "commune-exemple" else "commune-exemple"
    path.write_text(json.dumps(dict(record, entity=other)))
    with pytest.raises(Exception, match="damaged, altered or not for this escrow"):
        escrow.read(fingerprint)
    done = cli("export", quickstart, record["entity"], "--out", quickstart.parent / "x.p12")
    assert done.returncode == 1
    assert "escrowed key is damaged, altered or not for this escrow" in done.stderr


def _as_format_1(path: Path, data_key: bytes, entity: str) -> None:
    """Rewrite a key file as the tool wrote it before entities were sealed in."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    record = json.loads(path.read_text())
    nonce = base64.b64decode(record["nonce"])
    aead = AESGCM(data_key)
    entity_then = record["entity"]
    from provisioner.state.escrow import _key_aad

    der = aead.decrypt(nonce, base64.b64decode(record["sealed"]), _key_aad(path.stem, entity_then))
    sealed = aead.encrypt(nonce, der, path.stem.encode())
    path.write_text(
        json.dumps(
            {
                "format": "provisioner-escrow/1",
                "entity": entity,
                "key_sha256": path.stem,
                "nonce": record["nonce"],
                "sealed": base64.b64encode(sealed).decode(),
            }
        )
    )


def test_old_escrow_files_are_read_then_rewritten_with_the_states_entity(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    folder = quickstart.parent / ".provisioner" / "escrow"
    escrow = Escrow.unlock(folder, ESCROW_PASSPHRASE)
    files = _key_files(quickstart)
    owners = {p.stem: json.loads(p.read_text())["entity"] for p in files}
    # An escrow as an older release left it: format 1 key files, keyring without the marker.
    # One file's (unauthenticated) entity field was altered.
    tampered = files[0]
    for path in files:
        claim = "intrus" if path == tampered else owners[path.stem]
        _as_format_1(path, escrow._data_key, claim)
    ring = json.loads((folder / "keyring.json").read_text())
    del ring["key_files"]
    (folder / "keyring.json").write_text(json.dumps(ring))

    old = Escrow.unlock(folder, ESCROW_PASSPHRASE)
    assert old.needs_upgrade
    read = old.read(tampered.stem)  # still read...
    assert read.entity == "intrus" and not read.authenticated  # ...its entity not trusted
    assert cli("plan", quickstart).returncode == 0, "a read-only command writes nothing"
    assert json.loads(tampered.read_text())["format"] == "provisioner-escrow/1"

    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stderr
    upgraded = Escrow.unlock(folder, ESCROW_PASSPHRASE)
    assert not upgraded.needs_upgrade
    for path in files:
        again = upgraded.read(path.stem)
        assert again.authenticated and again.entity == owners[path.stem], "the state's entity"
        assert json.loads(path.read_text())["format"] == "provisioner-escrow-key/2"
    assert cli("rehearse", quickstart).returncode == 0


def test_entity_names_in_messages_are_escaped(tmp_path: Path) -> None:
    path = one_entity(
        tmp_path,
        '{id: a, name: A, key: {designation: "A", common_name: "B\\u202e"}, password: {env: P}}',
    )
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    text = str(caught.value)
    assert "\u202e" not in text and re.search(r"'B\\u202e' differs", text)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("commune-exemple.g1.p12", ("commune-exemple", 1)),
        ("commune-exemple.g12.p12", ("commune-exemple", 12)),
        ("ville.grand-est.g3.p12", ("ville.grand-est", 3)),  # ".g" inside the entity id
        ("a.g2.g4.p12", ("a.g2", 4)),  # the last ".g" ends the entity id
        ("commune-exemple.g1.P12", None),
        ("commune-exemple.g1.pfx", None),
        ("commune-exemple.G1.p12", None),
        ("commune-exemple.g01.p12", None),  # not a name this tool writes: not its copy
        ("commune-exemple.g.p12", None),
        ("commune-exemple.gx.p12", None),
        ("commune-exemple.g-1.p12", None),
        (".g1.p12", None),
        ("commune-exemple.p12", None),
        ("commune-exemple.g1.p12.bak", None),
    ],
)
def test_a_copys_file_name_is_read_back_exactly_as_it_is_written(
    name: str, parsed: tuple[str, int] | None
) -> None:
    """plan, recover and the later-generation checks read a file as a copy of this tool only
    by the name it writes (`<entity>.g<number>.p12`); any other name is a file of somebody
    else's, never taken for a generation."""
    assert parse_copy_name(name) == parsed
    if parsed is not None:
        assert copy_file_name(*parsed) == name
