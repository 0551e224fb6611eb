"""Consultations as platforms and Excel export them: French or English columns, `;` or `,`,
UTF-8 with or without BOM, Windows-1252 (reported, not guessed silently), JJ/MM/AAAA HH:MM
dates, the manifest's own names for another platform; refusals name the line and column."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from provisioner.consultations import Consultation, read_consultations
from provisioner.errors import Diagnostic, ManifestError
from provisioner.platform_csv import DEFAULT_FORMAT, ExportFormat
from tests.conftest import REPO, Runner

EXPORT = REPO / "tests" / "data" / "export-marches-cp1252.csv"
ENTITIES = {"commune-exemple", "syndicat-eaux"}
PARIS = dt.timezone(dt.timedelta(hours=1))  # winter time, as these dates are


def read(
    path: Path, fmt: ExportFormat = DEFAULT_FORMAT
) -> tuple[list[Consultation], list[Diagnostic]]:
    notes: list[Diagnostic] = []
    return read_consultations(path, ENTITIES, fmt, notes), notes


def test_an_excel_export_in_windows_1252_is_read_and_the_encoding_reported() -> None:
    items, notes = read(EXPORT)
    assert [c.reference for c in items] == ["2026-TX-014", "2026-FC-002", "2025-SV-031"]
    first, second, third = items
    assert first.title == "Voirie rue des Lilas"  # Intitulé, not the Objet beside it
    assert second.title == "Fournitures scolaires – lot 2 « papeterie »"
    assert [c.status for c in items] == ["open", "opening", "closed"]
    assert first.designation == "Commune Exemple"
    assert first.deadline == dt.datetime(2026, 12, 20, 12, 0, tzinfo=PARIS)
    assert first.opening == dt.datetime(2026, 12, 21, 14, 0, tzinfo=PARIS)  # "21/12/2026 à 14h00"
    assert second.deadline == dt.datetime(2026, 11, 15, 12, 0, tzinfo=PARIS)  # with seconds
    assert third.deadline is not None and third.deadline.utcoffset() == dt.timedelta(hours=2)
    (note,) = notes
    assert note.severity == "warning"
    assert str(note.location) == f"{EXPORT}:1:2"  # the first byte that is not UTF-8: é
    assert "read as Windows-1252" in note.message


@pytest.mark.parametrize(
    ("encoding", "delimiter"), [("utf-8", ";"), ("utf-8-sig", ";"), ("utf-8-sig", ",")]
)
def test_utf8_with_or_without_bom_and_either_separator(
    tmp_path: Path, encoding: str, delimiter: str
) -> None:
    text = EXPORT.read_bytes().decode("cp1252")
    if delimiter == ",":
        text = text.replace(",", " ").replace(";", ",")
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode(encoding))
    items, notes = read(path)
    assert [c.status for c in items] == ["open", "opening", "closed"]
    assert items[0].title == "Voirie rue des Lilas"
    assert notes == []  # UTF-8: nothing to report


def test_english_columns_still_read(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "reference,title,entity,designation,status,deadline,opening\n"
        "A-1,Voirie,commune-exemple,Commune Exemple,open,2026-12-20T12:00:00+01:00,2027-01-10\n"
    )
    (item,), notes = read(path)
    assert item.deadline == dt.datetime(2026, 12, 20, 12, 0, tzinfo=PARIS) and notes == []


def test_refusals_name_the_line_the_column_and_the_header(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(
        (
            "Référence;Objet;Entité;Désignation du bi-clé;Statut;Date limite de remise des plis\n"
            "A-1;Voirie;commune-exemple;Commune Exemple;Fermée;20/12/2026 12:00\n"
            "A-2;Ecole;commune-exemple;Commune Exemple;En cours;31/12/2026 25:00\n"
            "A-3;Parc;commune-exemple;Commune Exemple;En cours;20/12/2026;x\n"
        ).encode("cp1252")
    )
    with pytest.raises(ManifestError) as info:
        read(path)
    text = str(info.value)
    # "Fermée" (closed to new bids) is not "closed" (done): refused, never guessed.
    assert f"{path}:2:44: error: Statut (status): 'Fermée' is not one of open, opening" in text
    assert "consultations: {statuses: {'Fermée': open}}" in text
    assert f"{path}:3:52: error: deadline: '31/12/2026 25:00' is not a date" in text
    assert f"{path}:4:62: error: 7 fields where the header has 6" in text


def test_a_missing_column_names_what_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("N° consultation;Objet;Entité;Désignation;État\nA-1;V;commune-exemple;D;open\n")
    with pytest.raises(ManifestError) as info:
        read(path)
    assert (
        f"{path}:1:1: error: header: no reference column (accepted: 'reference', 'Référence'"
        in (str(info.value))
    )
    assert "consultations: {columns: {reference: ...}}" in str(info.value)
    assert "the header is: N° consultation, Objet, Entité, Désignation, État)" in str(info.value)


def test_a_file_that_is_no_consultations_export_is_not_echoed(tmp_path: Path) -> None:
    """A password file given as the consultations file by mistake: its line is a secret."""
    path = tmp_path / "escrow.csv"
    path.write_text("DEMO-ONLY escrow Passphrase 2026\n")
    with pytest.raises(ManifestError) as info:
        read(path)
    text = str(info.value)
    assert "Passphrase" not in text and "DEMO-ONLY" not in text, text
    assert (
        "the first line has 1 field, not shown: it is no consultations header; is this the "
        "right file?)" in text
    ), text


def test_another_platform_s_names_come_from_the_manifest(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "N° consultation;Objet;Entité;Clé;Etape;Remise des offres\n"
        "A-1;Voirie;commune-exemple;Commune Exemple;Analyse;20/12/2026 12:00\n"
    )
    fmt = ExportFormat(
        columns=(
            ("reference", "N° consultation"),
            ("designation", "clé"),  # case and accents do not matter
            ("status", "Etape"),
            ("deadline", "Remise des offres"),
        ),
        statuses=(("Analyse", "opening"),),
    )
    (item,), _ = read(path, fmt)
    assert (item.reference, item.designation, item.status) == ("A-1", "Commune Exemple", "opening")
    assert item.deadline == dt.datetime(2026, 12, 20, 12, 0, tzinfo=PARIS)


def test_a_misspelt_column_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "Référence;Entité;Désignation;Statut;Date limite de remise des plis;Intitul\n"
        "A-1;commune-exemple;Commune Exemple;open;20/12/2026;Travaux\n"
    )
    (item,), notes = read(path)
    assert item.deadline is not None and not item.title
    (note,) = notes
    assert note.severity == "warning"
    assert "column 'Intitul' is not read: did you mean the title column?" in note.message


def test_a_misspelt_date_column_is_refused(tmp_path: Path) -> None:
    """A deadline read as nothing would hide a key expiring before it (red team, 2026-11-27)."""
    path = tmp_path / "export.csv"
    path.write_text(
        "Référence;Entité;Désignation;Statut;Date limite de remise des pli\n"
        "A-1;commune-exemple;Commune Exemple;open;20/12/2026\n"
    )
    with pytest.raises(ManifestError) as refused:
        read(path)
    (error,) = refused.value.diagnostics
    assert error.severity == "error"
    assert "column 'Date limite de remise des pli' is not read: did you mean the deadline" in (
        error.message
    )
    assert "its dates would be lost" in error.message


def test_an_opening_column_is_read_or_refused_never_dropped(tmp_path: Path) -> None:
    """Red team 4, M1: a column named `Ouverture` was neither read nor refused, and the
    recorded opening date was lost with it."""
    path = tmp_path / "export.csv"
    head = "Référence;Entité;Désignation;Statut;Date limite de remise des plis;"
    row = "A-1;commune-exemple;Commune Exemple;Ouverte;25/11/2028 12:00;05/12/2028 14:00\n"
    path.write_text(head + "Ouverture\n" + row)
    (item,), _ = read(path)
    assert item.opening == dt.datetime(2028, 12, 5, 14, 0, tzinfo=PARIS)
    path.write_text(head + "Séance d'ouverture\n" + row)
    with pytest.raises(ManifestError) as refused:
        read(path)
    (error,) = refused.value.diagnostics
    assert 'column "Séance d\'ouverture" is not read: did you mean the opening' in error.message


@pytest.mark.parametrize(
    ("data", "where", "message"),
    [
        # UTF-8 "é" then a Windows-1252 "é": a damaged file, not guessed either way.
        (
            b"reference;entity;designation;status\nA;x;Caf\xc3\xa9 \xe9;open\n",
            "2:11",
            "mixes UTF-8",
        ),
        # 0x81 is not a Windows-1252 character.
        (b"reference;entity;designation;status\nA;x;D\x81;open\n", "2:6", "byte 0x81 is neither"),
        (b"reference;entity;designation;status\nA;x;D\x01;open\n", "2:6", "control character"),
    ],
)
def test_bytes_that_are_not_text_are_refused_with_their_place(
    tmp_path: Path, data: bytes, where: str, message: str
) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(data)
    with pytest.raises(ManifestError) as info:
        read(path)
    assert f"{path}:{where}: error: " in str(info.value) and message in str(info.value)


def test_validate_and_plan_take_the_export_the_manifest_names(
    cli: Runner, quickstart: Path
) -> None:
    folder = quickstart.parent
    shutil.copy(EXPORT, folder / "export.csv")
    text = quickstart.read_text().replace(
        "entities:\n",
        "consultations:\n  file: export.csv\n  statuses: {Archivée: closed}\n\nentities:\n",
        1,
    )
    quickstart.write_text(text)
    done = cli("validate", quickstart)
    assert done.returncode == 0, done.stderr
    assert "export.csv:1:2: warning: not UTF-8: read as Windows-1252" in done.stderr
    assert "valid (2 entities" in done.stdout
    planned = cli("plan", quickstart, env={"PROVISIONER_NOW": "2026-11-01T09:00:00+00:00"})
    assert planned.returncode == 0, planned.stderr
    assert "read as Windows-1252" in planned.stderr
    quickstart.write_text(text.replace("Archivée: closed", "Archivée: done"))
    refused = cli("validate", quickstart)
    assert refused.returncode == 1
    assert "consultations.statuses.Archivée" in refused.stderr


def test_an_opening_before_the_deadline_is_a_warning_naming_the_line(tmp_path: Path) -> None:
    """Red team 5, L2: swapped dates were taken silently."""
    path = tmp_path / "export.csv"
    path.write_text(
        "reference;entity;designation;status;deadline;opening\n"
        "A-1;commune-exemple;Commune Exemple;open;01/12/2026 12:00;29/11/2026\n"
        "A-2;commune-exemple;Commune Exemple;open;01/12/2026 12:00;01/12/2026\n"
    )
    _, notes = read(path)
    (note,) = notes
    assert note.severity == "warning" and ":2" in str(note.location)
    assert "consultation A-1: opening 2026-11-29 is before its deadline 2026-12-01" in note.message
