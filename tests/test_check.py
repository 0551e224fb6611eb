"""`provisioner check`: one test per row of the severity table in docs/RUNBOOK.md.

Each runs the real command on a quickstart applied at CREATED, then consultation 2026-TX-014
made with its key: bound to generation 1 of commune-exemple (deadline 2026-12-20 12:00,
opening 2027-01-10), and asserts the exit code and the message a monitoring system would show.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Runner, run_cli
from tests.engine_helpers import p12_files, state_rows
from tests.test_consultations import CREATED, EXPIRED, IN_WINDOW, consultations

BOUND = 'generation 1 "Commune Exemple"'
CONSULTATION = "2026-TX-014 (Voirie rue des Lilas; deadline 2026-12-20; opening 2027-01-10)"


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The quickstart applied once with its consultation, and a pristine copy of it."""
    folder = tmp_path_factory.mktemp("applied") / "site"
    folder.mkdir()
    shutil.copy(Path(__file__).parent.parent / "examples" / "quickstart.yaml", folder)
    shutil.copytree(Path(__file__).parent.parent / "examples" / "secrets", folder / "secrets")
    # The key first, then the consultation the platform made with it.
    keys = run_cli(
        "apply", "--auto-approve", folder / "quickstart.yaml", env={"PROVISIONER_NOW": CREATED}
    )
    assert keys.returncode == 0, keys.stdout + keys.stderr
    consultations(folder)
    done = run_cli(
        "apply",
        "--auto-approve",
        folder / "quickstart.yaml",
        "--consultations",
        folder / "consultations.yaml",
        env={"PROVISIONER_NOW": CREATED},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pristine = folder.parent / "pristine"
    shutil.copytree(folder, pristine, symlinks=True)
    return folder, pristine


@pytest.fixture
def manifest(applied: tuple[Path, Path]) -> Path:
    """The applied site as it was after its first apply (the state records absolute paths, so
    each test gets it back in place rather than a copy elsewhere)."""
    folder, pristine = applied
    shutil.rmtree(folder)
    shutil.copytree(pristine, folder, symlinks=True)
    return folder / "quickstart.yaml"


def check(cli: Runner, manifest: Path, at: str, *extra: str) -> tuple[int, str]:
    done = cli(
        "check",
        manifest,
        "--consultations",
        manifest.parent / "consultations.yaml",
        *extra,
        env={"PROVISIONER_NOW": at},
    )
    assert not done.stderr, done.stderr
    return done.returncode, done.stdout


def dates(manifest: Path, deadline: str, opening: str, status: str = "open") -> None:
    path = consultations(manifest.parent, status=status)
    text = path.read_text()
    text = text.replace("2026-12-20T12:00:00+01:00", deadline).replace("2027-01-10", opening)
    path.write_text(text)


def renew(cli: Runner, manifest: Path) -> None:
    """Generation 2 is created; generation 1 stays for the consultation."""
    done = cli(
        "apply",
        "--auto-approve",
        manifest,
        "--consultations",
        manifest.parent / "consultations.yaml",
        env={"PROVISIONER_NOW": IN_WINDOW},
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- OK


def test_ok_when_every_bound_key_is_held_escrowed_and_valid(cli: Runner, manifest: Path) -> None:
    code, out = check(cli, manifest, CREATED)
    assert code == 0, out
    assert out.startswith("PROVISIONER OK - 2 entities, 5 copies in sync")
    # Nagios perfdata with thresholds: counts alert above 0, days left below --warn-days
    # (WARNING) and --critical-days (CRITICAL).
    perf = "entities=2;;;0 present=2;;;0 critical=0;;0;0 warning=0;0;;0 min_days_left=730;30:;7:"
    assert out.splitlines()[0].endswith(f"| {perf}"), out


# ---------------------------------------------------------------- CRITICAL


def test_critical_when_a_bound_generation_is_missing_from_a_workstation(
    cli: Runner, manifest: Path
) -> None:
    for rel, path in p12_files(manifest).items():
        if rel.endswith("commune-exemple.g1.p12"):
            path.unlink()  # every copy deleted, the consultation still open
    code, out = check(cli, manifest, CREATED)
    assert code == 2 and out.startswith("PROVISIONER CRITICAL - "), out
    for ws in ("ws-accueil", "ws-marches"):
        assert (
            f"CRITICAL: commune-exemple: [bound-missing] {BOUND} is bound to {CONSULTATION} but "
            f"is missing from workstation {ws}: no agent there could open those bids" in out
        )


def test_the_first_line_counts_and_names_every_critical_code_and_stays_short(
    cli: Runner, manifest: Path
) -> None:
    """A monitoring screen shows the first line: the counts, then each critical code with
    the entities it concerns, short enough to read; every finding follows on its own line."""
    for rel, path in p12_files(manifest).items():
        if rel.endswith("commune-exemple.g1.p12"):
            path.unlink()
    ((key_sha256,),) = state_rows(
        manifest, "SELECT key_sha256 FROM generations WHERE entity = 'commune-exemple'"
    )
    (manifest.parent / ".provisioner" / "escrow" / f"{key_sha256}.key").unlink()
    code, out = check(cli, manifest, CREATED, "--warn-days", "800", "--critical-days", "5")
    first, *rest = out.splitlines()
    text, perf = first.split(" | ")
    critical = [line for line in rest if line.startswith("CRITICAL: ")]
    warnings = [line for line in rest if line.startswith("WARNING: ")]
    assert code == 2, out
    assert rest[: len(critical)] == critical, "the most severe findings come first"
    assert text.startswith(
        f"PROVISIONER CRITICAL - {len(critical)} critical, {len(warnings)} warnings: "
    ), first
    assert {"bound-missing", "escrow-missing", "not-escrowed"} <= {
        line.split("[", 1)[1].split("]", 1)[0] for line in critical
    }, out
    for code_name in ("bound-missing", "escrow-missing", "not-escrowed"):
        assert f"{code_name} (commune-exemple)" in text, first
    assert "expiring" not in text  # a warning, not named while criticals are
    assert len(text) < 240, text
    assert perf.startswith(f"entities=2;;;0 present=2;;;0 critical={len(critical)};;0;0 ")
    assert perf.endswith(";800:;5:"), perf  # the thresholds given on the command line


def test_perfdata_counts_an_absent_entity_and_says_u_without_any_key(
    cli: Runner, quickstart: Path
) -> None:
    """Entities are those declared (an absent one counted, `present` beside it); with no key
    made yet the days left are undetermined (U), never 0 days."""
    done = cli("apply", "--auto-approve", "--limit", "syndicat-eaux", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    text = quickstart.read_text()
    absent = text.replace("  - id: syndicat-eaux\n", "  - id: syndicat-eaux\n    state: absent\n")
    assert absent != text
    quickstart.write_text(absent)
    probe = cli("check", quickstart)
    first = probe.stdout.splitlines()[0]
    assert probe.returncode == 1, probe.stdout
    assert first.startswith("PROVISIONER WARNING - 0 critical, "), first
    assert "no-key (commune-exemple)" in first, first
    assert first.split(" | ")[1].startswith("entities=2;;;0 present=1;;;0 critical=0;;0;0 ")
    assert first.endswith(" min_days_left=U;30:;7:"), first
    limited = cli("check", "--limit", "commune-exemple", quickstart).stdout.split(" | ")[1]
    assert limited.startswith("entities=1;;;0 present=1;;;0 "), limited  # the one asked for
    # Both absent and applied: nothing to judge, no expiry to give (not "in 0 days").
    both = absent.replace(
        "  - id: commune-exemple\n", "  - id: commune-exemple\n    state: absent\n"
    )
    quickstart.write_text(both)
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    probe = cli("check", quickstart)
    assert probe.returncode == 0, probe.stdout
    assert probe.stdout.startswith(
        "PROVISIONER OK - 0 entities, 1 copy in sync | entities=2;;;0 present=0;;;0 "
    ), probe.stdout


def test_critical_when_a_bound_generation_is_missing_from_the_escrow(
    cli: Runner, manifest: Path
) -> None:
    ((key_sha256,),) = state_rows(
        manifest, "SELECT key_sha256 FROM generations WHERE entity = 'commune-exemple'"
    )
    (manifest.parent / ".provisioner" / "escrow" / f"{key_sha256}.key").unlink()
    # Listed first, a closed consultation of the other entity: nothing to say about it, and
    # the open one after it is still judged.
    listed = manifest.parent / "consultations.yaml"
    text = listed.read_text()
    listed.write_text(
        text.replace(
            "consultations:\n",
            "consultations:\n  - {reference: 2026-AA-001, title: Curage, entity: syndicat-eaux, "
            "designation: Syndicat Eaux Val 2026, status: closed, deadline: 2026-10-01}\n",
            1,
        )
    )
    code, out = check(cli, manifest, CREATED)
    assert code == 2, out
    assert (
        f"CRITICAL: commune-exemple: [not-escrowed] {BOUND} bound to consultation {CONSULTATION} "
        "is missing from the escrow" in out
    )
    assert "2026-AA-001" not in out


def test_critical_when_the_bound_generation_expires_before_the_deadline_for_bids(
    cli: Runner, manifest: Path
) -> None:
    dates(manifest, "2029-01-05T12:00:00+01:00", "2029-01-10")
    code, out = check(cli, manifest, CREATED)
    assert code == 2, out
    assert (
        f"CRITICAL: commune-exemple: [expires-before-deadline] {BOUND} expires on 2028-11-30, "
        "before the deadline for bids of consultation 2026-TX-014 (Voirie rue des Lilas; "
        "deadline 2029-01-05; opening 2029-01-10) on 2029-01-05" in out
    )


def test_critical_when_the_bound_generation_expires_before_the_opening(
    cli: Runner, manifest: Path
) -> None:
    dates(manifest, "2026-12-20T12:00:00+01:00", "2029-01-10")
    code, out = check(cli, manifest, CREATED)
    assert code == 2, out
    assert (
        f"CRITICAL: commune-exemple: [expires-before-opening] {BOUND} expires on 2028-11-30, "
        "before the opening of consultation 2026-TX-014 (Voirie rue des Lilas; deadline "
        "2026-12-20; opening 2029-01-10) on 2029-01-10" in out
    )


@pytest.mark.parametrize(
    ("deadline", "opening", "code", "label"),
    [
        ("2028-11-25T12:00:00+01:00", "2028-11-30", "expires-before-opening", "opening"),
        ("2028-11-30", "2028-12-02T14:00:00+01:00", "expires-before-deadline", "deadline for bids"),
    ],
)
def test_a_date_without_a_time_covers_its_whole_day(
    cli: Runner, manifest: Path, deadline: str, opening: str, code: str, label: str
) -> None:
    """Generation 1 expires on 2028-11-30 at 09:55 UTC: an opening (or a deadline) given as
    that day, without a time, is after it, from the day the consultation is bound."""
    dates(manifest, deadline, opening)
    for at in ("2026-12-02T10:00:00+00:00", "2028-11-29T10:00:00+00:00"):
        if at.startswith("2028"):
            renew(cli, manifest)  # generation 2 current: only the bound generation 1 at risk
        exit_code, out = check(cli, manifest, at)
        assert exit_code == 2, out
        line = next(x for x in out.splitlines() if f"[{code}]" in x)
        assert line.startswith(f"CRITICAL: commune-exemple: [{code}] {BOUND} expires on 2028-11-30")
        assert f"before the {label} of consultation 2026-TX-014" in line


@pytest.mark.parametrize(
    ("deadline", "opening", "status", "severity", "code", "risk"),
    [
        (
            "2029-01-05T12:00:00+01:00",
            "2029-01-10",
            "open",
            "CRITICAL",
            "expired-accepting-bids",
            "still accepts bids: companies cannot encrypt to an expired certificate",
        ),
        (
            "2026-12-20T12:00:00+01:00",
            "2029-01-10",
            "opening",
            "CRITICAL",
            "expired-before-opening",
            "has not been opened yet",
        ),
        # Bids deposited and the opening day past, not yet closed: keep the key, nothing burns.
        ("2026-12-20T12:00:00+01:00", "2027-01-10", "opening", "WARNING", "expired-bound", ""),
    ],
)
def test_an_expired_bound_generation_is_critical_while_bids_or_the_opening_are_ahead(
    cli: Runner,
    manifest: Path,
    deadline: str,
    opening: str,
    status: str,
    severity: str,
    code: str,
    risk: str,
) -> None:
    dates(manifest, deadline, opening, status)
    renew(cli, manifest)  # the current generation is fine; only generation 1 is expired
    exit_code, out = check(cli, manifest, EXPIRED)
    assert exit_code == {"CRITICAL": 2, "WARNING": 1}[severity], out
    line = next(x for x in out.splitlines() if f"[{code}]" in x)
    assert line.startswith(f"{severity}: commune-exemple: [{code}] {BOUND} expired on 2028-11-30")
    assert f"consultation 2026-TX-014 (Voirie rue des Lilas; deadline {deadline[:10]}; " in line
    assert f"opening {opening})" in line and risk in line
    assert "Keep this key to open its bids" in line


def test_critical_when_the_plan_is_refused(cli: Runner, manifest: Path) -> None:
    renew(cli, manifest)
    consultations(manifest.parent, designation="Commune Exemple (2)")
    code, out = check(cli, manifest, IN_WINDOW)
    assert code == 2, out
    assert "CRITICAL: [refused]" in out and "consultation 2026-TX-014 is bound to" in out


def test_critical_when_the_current_generation_expires_within_the_critical_days(
    cli: Runner, manifest: Path
) -> None:
    code, out = check(cli, manifest, "2028-11-27T09:00:00+00:00")  # renewal never applied
    assert code == 2 and "commune-exemple: [expiring] current generation 1 expires in 3 days" in out


# ---------------------------------------------------------------- WARNING


def test_warning_when_a_renewal_is_near(cli: Runner, manifest: Path) -> None:
    code, out = check(cli, manifest, "2028-09-20T09:00:00+00:00")
    assert code == 1, out
    assert (
        'WARNING: commune-exemple: [renewal-soon] generation 1 "Commune Exemple" expires on '
        "2028-11-30; a new generation will be created from 2028-10-01" in out
    )


@pytest.mark.parametrize("damage", ["emptied", "half", "another copy"])
def test_critical_when_a_bound_copy_changed_since_it_was_written(
    cli: Runner, manifest: Path, damage: str
) -> None:
    """check reads no password: a bound copy whose bytes are not those written is not known
    to open the bids, whatever apply would make of it (red team 3, defect 4)."""
    files = p12_files(manifest)
    path = files["workstations/ws-accueil/commune-exemple.g1.p12"]
    data = path.read_bytes()
    path.write_bytes(
        {
            "emptied": b"",
            "half": data[: len(data) // 2],
            "another copy": files["workstations/ws-marches/syndicat-eaux.g1.p12"].read_bytes(),
        }[damage]
    )
    code, out = check(cli, manifest, CREATED)
    assert code == 2 and out.startswith("PROVISIONER CRITICAL - "), out
    assert "[pending] 1 change pending (drifted)" in out
    assert (
        f"CRITICAL: commune-exemple: [bound-missing] {BOUND} is bound to {CONSULTATION} but its "
        "copy on workstation ws-accueil changed since it was written: not known to open those "
        "bids (apply rewrites it)" in out
    )
    renew_at = {"PROVISIONER_NOW": CREATED}
    c = manifest.parent / "consultations.yaml"
    done = cli("apply", "--auto-approve", manifest, "--consultations", c, env=renew_at)
    assert done.returncode == 0 and "~ rewrite g1 on ws-accueil" in done.stdout, done.stdout
    assert check(cli, manifest, CREATED)[0] == 0


def test_critical_when_a_bound_copy_on_a_shared_location_is_garbled_in_place(
    cli: Runner, manifest: Path
) -> None:
    """Stateful suite, fixed seed, history 20-30: a bound generation's copy garbled on a shared
    location (same size: check, reading no password, sees a conflict) gave only a WARNING."""
    path = p12_files(manifest)["shared/backup/commune-exemple.g1.p12"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    code, out = check(cli, manifest, CREATED)
    assert code == 2 and out.startswith("PROVISIONER CRITICAL - "), out
    line = next(x for x in out.splitlines() if "[bound-missing]" in x)
    assert "shared location backup-share" in line and "2026-TX-014" in line


def test_a_bound_copy_to_re_encode_for_a_new_password_is_not_a_changed_copy(
    cli: Runner, manifest: Path
) -> None:
    """Its recorded bytes are intact: it opens the bids until apply re-encodes it. The probe,
    which reads no secret, sees the password file changed: a WARNING for apply, not a
    CRITICAL copy."""
    (manifest.parent / "secrets" / "commune-exemple.pass").write_text("Another-Secret-2026\n")
    done = cli("plan", manifest, "--consultations", manifest.parent / "consultations.yaml",
               env={"PROVISIONER_NOW": CREATED})  # fmt: skip
    assert done.returncode == 0 and "[password-changed]" in done.stdout, done.stdout
    assert "changed since it was written" not in done.stdout + done.stderr
    code, out = check(cli, manifest, CREATED)
    assert code == 1 and "CRITICAL:" not in out, out
    assert "commune-exemple: [pending] 3 changes pending (password-changed)" in out, out


def test_warning_when_a_copy_drifted_and_apply_will_repair_it(cli: Runner, manifest: Path) -> None:
    # Not bound to any consultation: nothing burns until apply repairs it.
    p12_files(manifest)["workstations/ws-marches/syndicat-eaux.g1.p12"].write_bytes(b"x")
    code, out = check(cli, manifest, CREATED)
    assert code == 1 and out.startswith("PROVISIONER WARNING - "), out
    assert "[pending] 1 change pending (drifted): run provisioner apply" in out
    document = json.loads(
        cli(
            "check",
            "--json",
            manifest,
            "--consultations",
            manifest.parent / "consultations.yaml",
            env={"PROVISIONER_NOW": CREATED},
        ).stdout
    )
    assert document["status"] == "WARNING" and document["exit_code"] == 1


def test_a_limited_check_judges_only_the_entities_and_copies_it_names(
    cli: Runner, manifest: Path
) -> None:
    """A monitoring check per service (`--limit`): syndicat-eaux's drifted copy warns the
    check of syndicat-eaux, not that of commune-exemple, and a check limited to a workstation
    counts the copies there only."""
    p12_files(manifest)["workstations/ws-marches/syndicat-eaux.g1.p12"].write_bytes(b"x")
    code, out = check(cli, manifest, CREATED, "--limit", "commune-exemple")
    assert code == 0, out
    assert out.startswith(
        "PROVISIONER OK - 1 entity, 3 copies in sync, earliest expiry in 730 days | entities=1;;;0 "
        "present=1;;;0 critical=0;;0;0 warning=0;0;;0 min_days_left=730;30:;7:"
    ), out
    code, out = check(cli, manifest, CREATED, "--limit", "syndicat-eaux")
    assert code == 1, out
    assert out.startswith("PROVISIONER WARNING - 0 critical, 1 warning: pending (syndicat-eaux)")
    code, out = check(cli, manifest, CREATED, "--limit", "ws-accueil")
    assert code == 0, out
    assert out.startswith("PROVISIONER OK - 1 entity, 1 copy in sync, "), out
    # Both keys expire within 800 days: the check of one names its own key only.
    code, out = check(cli, manifest, CREATED, "--limit", "commune-exemple", "--warn-days", "800")
    assert code == 1, out
    assert out.startswith("PROVISIONER WARNING - 0 critical, 1 warning: expiring (commune-exemple)")
    assert "syndicat-eaux" not in out, out
    code, out = check(
        cli, manifest, CREATED, "--limit", "commune-exemple", "--critical-days", "800"
    )
    assert code == 2, out
    assert out.startswith(
        "PROVISIONER CRITICAL - 1 critical, 0 warnings: expiring (commune-exemple)"
    )


def test_every_problem_is_named_whatever_is_listed_before_it(cli: Runner, manifest: Path) -> None:
    """An entity declared first that has no key yet, and a copy of commune-exemple missing
    before the file that stands where its bound copy goes: each finding is there, and those
    that follow it."""
    text = manifest.read_text()
    manifest.write_text(
        text.replace(
            "entities:\n",
            "entities:\n  - {id: commune-nouvelle, name: Commune Nouvelle, key: {designation: "
            "Commune Nouvelle}, password: {file: secrets/commune-exemple.pass}, "
            "shared_locations: [backup-share]}\n",
            1,
        )
    )
    files = p12_files(manifest)
    files["workstations/ws-marches/commune-exemple.g1.p12"].unlink()  # a repair, planned first
    accueil = files["workstations/ws-accueil/commune-exemple.g1.p12"]
    garbled = bytearray(accueil.read_bytes())
    garbled[len(garbled) // 2] ^= 0xFF  # changed in place: same size, not the bytes written
    accueil.write_bytes(bytes(garbled))
    files["workstations/ws-marches/syndicat-eaux.g1.p12"].write_bytes(b"x")
    code, out = check(cli, manifest, CREATED)
    assert code == 2, out
    assert "WARNING: commune-nouvelle: [no-key] no bi-clé yet" in out, out
    assert "WARNING: syndicat-eaux: [pending] 1 change pending (drifted)" in out, out
    assert (
        f"CRITICAL: commune-exemple: [bound-missing] generation 1 bound to consultation "
        f"{CONSULTATION}: ws-accueil: {accueil} holds a file this state did not write" in out
    ), out


# ---------------------------------------------------------------- UNKNOWN


def test_unknown_without_a_state(cli: Runner, quickstart: Path) -> None:
    consultations(quickstart.parent)
    code, out = check(cli, quickstart, CREATED)
    assert code == 3, out
    assert out.startswith(f"PROVISIONER UNKNOWN - {quickstart.parent / '.provisioner'}: no state")


def test_unknown_when_the_state_is_unreadable(cli: Runner, manifest: Path) -> None:
    (manifest.parent / ".provisioner" / "state.db").write_bytes(b"damaged")
    code, out = check(cli, manifest, CREATED)
    assert code == 3 and out.startswith("PROVISIONER UNKNOWN - "), out
    assert "state database is unreadable" in out


def test_unknown_when_the_consultations_file_is_unreadable(cli: Runner, manifest: Path) -> None:
    path = manifest.parent / "consultations.yaml"
    path.write_text(path.read_text().replace("status: open", "status: ouvert"))
    code, out = check(cli, manifest, CREATED)
    assert code == 3 and out.startswith("PROVISIONER UNKNOWN - "), out
    assert "consultations.yaml:" in out
