"""End to end through the real command line, on examples/quickstart.yaml (local transport)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest

from provisioner.crypto import pkcs12
from provisioner.crypto.keys import public_key_fingerprint
from provisioner.engine import load_inputs
from provisioner.manifest.schema import load_schema
from provisioner.state.store import hold
from tests.conftest import TEST_CLOCK, Runner
from tests.engine_helpers import (
    DESIGNATIONS,
    PASSWORDS,
    escrowed_keys,
    key_fingerprints,
    mode,
    p12_files,
    postgresql_of,
    record_workers,
    serial,
    state_rows,
)
from tests.manifests import Manifest

EXPECTED = {
    "shared/backup/commune-exemple.g1.p12": "commune-exemple",
    "shared/backup/syndicat-eaux.g1.p12": "syndicat-eaux",
    "workstations/ws-accueil/commune-exemple.g1.p12": "commune-exemple",
    "workstations/ws-marches/commune-exemple.g1.p12": "commune-exemple",
    "workstations/ws-marches/syndicat-eaux.g1.p12": "syndicat-eaux",
}


def apply(
    cli: Runner, manifest: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = cli("apply", "--auto-approve", manifest, *extra, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.both_backends
def test_first_apply_creates_keys_escrow_and_copies_that_open(
    cli: Runner, quickstart: Path
) -> None:
    planned = cli("plan", quickstart)
    assert planned.returncode == 0, planned.stderr
    assert "Plan: 7 to create, 0 to update, 0 to remove." in planned.stdout
    assert "password       = (sensitive)" in planned.stdout
    assert not (quickstart.parent / ".provisioner").exists(), "plan must write nothing"

    apply(cli, quickstart)
    files = p12_files(quickstart)
    assert set(files) == set(EXPECTED)
    for rel, path in files.items():
        entity = EXPECTED[rel]
        bundle = pkcs12.decode(path.read_bytes(), PASSWORDS[entity])
        assert bundle.friendly_name is not None
        assert bundle.friendly_name.startswith(DESIGNATIONS[entity])
        assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert (
        pkcs12.inspect(files["shared/backup/syndicat-eaux.g1.p12"].read_bytes()).profile == "legacy"
    )
    state = quickstart.parent / ".provisioner"
    if postgresql_of(quickstart) is None:
        assert mode(state) == 0o700 and mode(state / "state.db") == 0o600
    else:
        assert not state.exists(), "a PostgreSQL state writes no state folder"
    escrowed = escrowed_keys(quickstart)
    recorded = sorted(r[0] for r in state_rows(quickstart, "SELECT key_sha256 FROM generations"))
    assert escrowed == recorded and len(recorded) == 2
    assert set(key_fingerprints(quickstart).values()) == set(recorded)

    again = cli("plan", "--detailed-exitcode", quickstart)
    assert again.returncode == 0, again.stdout
    # A summary, not one line per entity; -v lists each entity and why it is in sync.
    assert again.stdout.startswith(
        "No changes. Every bi-clé is current and every copy matches what was written.\n"
        "  Nothing to do for 2 entities (-v lists each, with its expiry and renewal date).\n"
    ), again.stdout
    assert "valid until" not in again.stdout
    listed = cli("-v", "plan", quickstart).stdout
    assert 'commune-exemple: generation 1 "Commune Exemple" valid until' in listed
    assert 'syndicat-eaux: generation 1 "Syndicat Eaux Val 2026" valid until' in listed


@pytest.mark.both_backends
def test_drift_is_planned_with_its_reason_and_repaired(cli: Runner, quickstart: Path) -> None:
    apply(cli, quickstart)
    files = p12_files(quickstart)
    files["workstations/ws-accueil/commune-exemple.g1.p12"].unlink()
    files["workstations/ws-marches/syndicat-eaux.g1.p12"].write_bytes(b"not a pkcs12")
    planned = cli("plan", "--detailed-exitcode", quickstart)
    assert planned.returncode == 2
    assert "+ write g1 on ws-accueil:" in planned.stdout and "[missing]" in planned.stdout
    assert "~ rewrite g1 on ws-marches:" in planned.stdout and "[drifted]" in planned.stdout
    assert "Plan: 1 to create, 1 to update, 0 to remove." in planned.stdout
    apply(cli, quickstart)
    assert set(p12_files(quickstart)) == set(EXPECTED)
    key_fingerprints(quickstart)  # every copy opens again
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 0


def test_password_change_reencodes_every_copy_with_the_same_key(
    cli: Runner, quickstart: Path
) -> None:
    apply(cli, quickstart)
    before = key_fingerprints(quickstart)
    new = "Brand-New-Password-2027!"
    (quickstart.parent / "secrets" / "commune-exemple.pass").write_text(new + "\n")
    planned = cli("plan", quickstart)
    assert planned.stdout.count("[password-changed]") == 3
    assert "create" not in planned.stdout.split("Plan:")[0].replace("to create", "")
    apply(cli, quickstart)
    for rel, path in p12_files(quickstart).items():
        if EXPECTED[rel] == "commune-exemple":
            bundle = pkcs12.decode(path.read_bytes(), new)
            assert public_key_fingerprint(bundle.key) == before[rel]
    assert len(state_rows(quickstart, "SELECT id FROM generations")) == 2


def test_profile_change_reencodes_with_the_same_key(cli: Runner, quickstart: Path) -> None:
    apply(cli, quickstart)
    before = key_fingerprints(quickstart)
    text = quickstart.read_text().replace("pkcs12_profile: legacy", "pkcs12_profile: modern")
    quickstart.write_text(text)
    planned = cli("plan", quickstart)
    assert planned.stdout.count("[profile-changed] PKCS#12 profile legacy -> modern") == 2
    apply(cli, quickstart)
    assert key_fingerprints(quickstart) == before
    for rel, path in p12_files(quickstart).items():
        assert pkcs12.inspect(path.read_bytes()).profile == "modern", rel


@pytest.mark.both_backends
def test_renewal_adds_a_generation_beside_the_old_one(cli: Runner, quickstart: Path) -> None:
    apply(cli, quickstart)
    old = key_fingerprints(quickstart)
    later = {"PROVISIONER_NOW": "2028-10-15T08:00:00+00:00"}  # inside the 60-day window
    planned = cli("plan", quickstart, env=later)
    assert "-/+ generation 2: create  [renewal-due] generation 1 expires on" in planned.stdout
    apply(cli, quickstart, env=later)
    files = p12_files(quickstart)
    assert "shared/backup/commune-exemple.g1.p12" in files, "shared location keeps g1"
    assert "shared/backup/commune-exemple.g2.p12" in files
    assert "workstations/ws-accueil/commune-exemple.g2.p12" in files
    assert "workstations/ws-accueil/commune-exemple.g1.p12" not in files
    rows = state_rows(
        quickstart,
        "SELECT entity, number, status, designation FROM generations ORDER BY entity, number",
    )
    assert rows == [
        ("commune-exemple", 1, "retired", "Commune Exemple"),
        ("commune-exemple", 2, "current", "Commune Exemple (2)"),
        ("syndicat-eaux", 1, "retired", "Syndicat Eaux Val 2026"),
        ("syndicat-eaux", 2, "current", "Syndicat Eaux Val 2028"),
    ]
    escrow = escrowed_keys(quickstart)
    assert set(old.values()) <= set(escrow) and len(escrow) == 4
    assert cli("plan", "--detailed-exitcode", quickstart, env=later).returncode == 0


def test_a_generation_is_renewed_from_renew_before_days_before_its_expiry_not_a_second_sooner(
    cli: Runner, quickstart: Path
) -> None:
    """The quickstart's keys, made on 2026-11-30 09:00 UTC for 730 days, expire on 2028-11-29
    09:00; with renew_before_days 60 the renewal date is 2028-09-30 09:00, and every place that
    says it agrees: the in-sync line, the warning before it, the plan on the day."""
    apply(cli, quickstart)
    before = {"PROVISIONER_NOW": "2028-09-30T08:59:59+00:00"}
    waiting = cli("-v", "plan", "--detailed-exitcode", quickstart, env=before)
    assert waiting.returncode == 0, waiting.stdout
    assert "valid until 2028-11-29 (60 days; renewal from 2028-09-30)" in waiting.stdout
    assert "a new generation will be created from 2028-09-30" in waiting.stdout
    on_the_day = {"PROVISIONER_NOW": "2028-09-30T09:00:00+00:00"}
    due = cli("plan", "--detailed-exitcode", quickstart, env=on_the_day)
    assert due.returncode == 2, due.stdout
    assert "-/+ generation 2: create  [renewal-due] generation 1 expires on 2028-11-29" in (
        due.stdout
    )


@pytest.mark.both_backends
def test_invariant_6_plans_are_exact_saved_plan_applied_or_refused_as_stale(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first.plan"
    assert cli("plan", "--out", first, quickstart).returncode == 0
    stale = tmp_path / "stale.plan"
    assert cli("plan", "--out", stale, quickstart).returncode == 0
    done = cli("apply", first)
    assert done.returncode == 0, done.stderr
    assert "Apply complete" in done.stdout
    refused = cli("apply", stale)
    assert refused.returncode == 1
    assert "stale plan" in refused.stderr and "state changed" in refused.stderr

    # A plan goes stale when a copy on a target changes after it was made.
    drift = tmp_path / "drift.plan"
    p12_files(quickstart)["workstations/ws-accueil/commune-exemple.g1.p12"].unlink()
    assert cli("plan", "--out", drift, quickstart).returncode == 0
    p12_files(quickstart)["workstations/ws-marches/commune-exemple.g1.p12"].unlink()
    refused = cli("apply", drift)
    assert refused.returncode == 1 and "files on the targets changed" in refused.stderr

    # ... and when the manifest or a secret changes.
    secret = tmp_path / "secret.plan"
    assert cli("plan", "--out", secret, quickstart).returncode == 0
    (quickstart.parent / "secrets" / "syndicat-eaux.pass").write_text("Another-Secret-99!\n")
    before = serial(quickstart)
    refused = cli("apply", secret)
    assert refused.returncode == 1 and "a secret changed" in refused.stderr
    assert serial(quickstart) == before
    for plan_file in (first, stale, drift, secret):
        text = plan_file.read_text()
        assert all(pw not in text for pw in PASSWORDS.values())
        assert mode(plan_file) == 0o600


@pytest.mark.both_backends
def test_invariant_7_one_writer_concurrent_apply_refused_by_the_lock(
    cli: Runner, quickstart: Path
) -> None:
    with hold(load_inputs(quickstart, None).location, "test holder"):
        refused = cli("apply", "--auto-approve", quickstart)
        assert refused.returncode == 1
        assert f"locked by pid {os.getpid()}" in refused.stderr
        assert "running `test holder`" in refused.stderr
        waited = cli("apply", "--auto-approve", "--lock-timeout", "0.5", quickstart)
        assert waited.returncode == 1 and "locked by" in waited.stderr
    assert not p12_files(quickstart) if (quickstart.parent / "demo-out").exists() else True
    apply(cli, quickstart)


def test_json_outputs_follow_their_schema(cli: Runner, quickstart: Path) -> None:
    planned = cli("plan", "--json", quickstart)
    document = json.loads(planned.stdout)
    jsonschema.validate(document, load_schema("plan.schema.json"))
    assert document["summary"] == {"create": 7, "update": 0, "remove": 0, "conflicts": 0}
    assert document["actions"][0]["attributes"]["password"] == "(sensitive)"
    apply(cli, quickstart)
    status = json.loads(cli("status", "--json", quickstart).stdout)
    entity = status["entities"][0]
    assert entity["ready"] is True and entity["reason"] == "up to date"
    assert [c["state"] for c in entity["copies"]] == ["ok", "ok", "ok"]


def test_status_shows_generations_and_copy_states(cli: Runner, quickstart: Path) -> None:
    apply(cli, quickstart)
    p12_files(quickstart)["workstations/ws-accueil/commune-exemple.g1.p12"].unlink()
    shown = cli("status", quickstart)
    assert shown.returncode == 0
    assert "commune-exemple (Commune d'Exemple)  Not ready: missing: no file there" in shown.stdout
    assert 'g1 current  "Commune Exemple"  valid until' in shown.stdout
    assert "missing      g1 ws-accueil:" in shown.stdout
    assert "syndicat-eaux (Syndicat des Eaux du Val)  Ready: up to date" in shown.stdout


def test_apply_without_a_terminal_needs_auto_approve(cli: Runner, quickstart: Path) -> None:
    done = cli("apply", quickstart, input="yes\n")
    assert done.returncode == 1
    assert "apply needs confirmation" in done.stderr
    assert not (quickstart.parent / "demo-out").exists()
    # Refused before anything is written: not even a state folder (issue 31).
    assert not (quickstart.parent / ".provisioner").exists()
    # With a state, a refused apply changes nothing in it either.
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    state = quickstart.parent / ".provisioner"
    before = sorted(p.relative_to(state) for p in state.rglob("*"))
    (quickstart.parent / "secrets" / "commune-exemple.pass").write_text("Another-Pass-2027!\n")
    for args in ([], ["--json"]):
        done = cli("apply", quickstart, *args)
        assert done.returncode == 1 and "--auto-approve" in done.stderr, args
    assert sorted(p.relative_to(state) for p in state.rglob("*")) == before


@pytest.mark.both_backends
def test_limit_plans_and_applies_one_entity(cli: Runner, quickstart: Path) -> None:
    planned = cli("plan", "--limit", "syndicat-eaux", quickstart)
    assert "commune-exemple" not in planned.stdout
    assert "Plan: 3 to create" in planned.stdout
    apply(cli, quickstart, "--limit", "syndicat-eaux")
    assert {EXPECTED[r] for r in p12_files(quickstart)} == {"syndicat-eaux"}
    unknown = cli("plan", "--limit", "nobody", quickstart)
    assert unknown.returncode == 1 and "--limit: unknown name nobody" in unknown.stderr


def test_a_no_op_plan_opens_no_pkcs12(
    cli: Runner, quickstart: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(cli, quickstart)
    from cryptography.hazmat.primitives.serialization import pkcs12 as backend

    from provisioner import clock
    from provisioner.engine import load_inputs, make_plan, observe, open_state

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a no-op plan decrypted a PKCS#12")

    monkeypatch.setattr(backend, "load_pkcs12", forbidden)
    monkeypatch.setattr(backend, "load_key_and_certificates", forbidden)
    monkeypatch.setattr(pkcs12, "decode", forbidden)
    with open_state(load_inputs(quickstart, None), create=False) as session:
        result = make_plan(session, observe(session), clock.now())
    assert not result.changes and len(result.in_sync) == 2


def test_a_secret_command_shared_by_entities_runs_once_per_run(
    tmp_path: Path, cli: Runner, quickstart: Path
) -> None:
    """One `{command}` for a whole region's passwords is run once per command, not per entity."""
    calls = tmp_path / "calls"
    script = tmp_path / "secret.sh"
    script.write_text(f"#!/bin/sh\necho run >> {calls}\necho Shared-Password-123!\n")
    script.chmod(0o700)
    text = quickstart.read_text()
    for name in ("commune-exemple", "syndicat-eaux"):
        text = text.replace(
            f"password: {{file: secrets/{name}.pass}}", f"password: {{command: [{script}]}}"
        )
    quickstart.write_text(text)
    done = cli("plan", quickstart)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == ["run"]


# One entity on one shared location and one workstation.
ONE_OF_EACH = (
    Manifest(
        escrow={"passphrase": {"file": "secrets/escrow.pass"}},
        defaults={"key": {"size": 2048}, "password_policy": {"min_length": 12}},
    )
    .location("backup-share", path="demo-out/shared")
    .workstation("ws-marches", path="demo-out/ws-marches")
    .entity(
        "syndicat-eaux",
        name="Syndicat des Eaux du Val",
        designation="Syndicat Eaux Val",
        password={"file": "secrets/syndicat-eaux.pass"},
        shared_locations=["backup-share"],
        workstations=["ws-marches"],
    )
    .text()
)


def test_counts_agree_with_their_number(cli: Runner, quickstart: Path) -> None:
    """Issue 31: "1 shared locations", "1 actions done"."""
    manifest = quickstart.parent / "one.yaml"
    manifest.write_text(ONE_OF_EACH)
    valid = cli("validate", manifest)
    assert valid.stdout == f"{manifest}: valid (1 entity, 1 workstation, 1 shared location)\n"
    assert (
        cli("apply", "--auto-approve", "-q", manifest).stdout == "Apply complete: 3 actions done.\n"
    )
    (quickstart.parent / "demo-out" / "ws-marches" / "syndicat-eaux.g1.p12").unlink()
    repaired = cli("apply", "--auto-approve", "-q", manifest)
    assert repaired.stdout == "Apply complete: 1 action done.\n"
    assert cli("-q", "status", manifest).stdout == "1 of 1 entity ready.\n"
    probe = cli("check", manifest).stdout
    assert probe.startswith("PROVISIONER OK - 1 entity, 2 copies in sync, earliest expiry in "), (
        probe
    )
    assert cli("-q", "rehearse", manifest).stdout.startswith("Rehearsal: 3 of 3 copies and")
    synced = cli("-v", "plan", manifest).stdout
    assert "2 copies match what was written" in synced, synced
    broken = quickstart.parent / "broken.yaml"
    broken.write_text(ONE_OF_EACH.replace("version: 1", "version: 2"))
    assert cli("validate", broken).stderr.endswith(f"{broken}: invalid (1 error)\n")


@pytest.mark.real_kdf
def test_a_saved_plan_tests_a_passphrase_guess_no_cheaper_than_the_escrow_keyring(
    quickstart: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan file goes to reviewers; its inputs digest mixes the entity passwords under a key
    derived from the escrow passphrase. Whoever holds every password could test passphrase
    guesses against it: never more cheaply than against the keyring file itself (an outside
    review of 2026-12-07 found it at half the keyring's scrypt cost)."""
    import hashlib

    from provisioner.engine import inputs_digest
    from provisioner.state import escrow

    costs: list[tuple[int, int, int]] = []
    real = hashlib.scrypt

    def counting(password: bytes, **kw: int) -> bytes:
        costs.append((kw["n"], kw["r"], kw["p"]))
        return real(password, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(hashlib, "scrypt", counting)
    inputs = load_inputs(quickstart, None)
    first = inputs_digest(inputs, b"s" * 16)
    assert costs == [(escrow.SCRYPT_N, escrow.SCRYPT_R, escrow.SCRYPT_P)]
    assert escrow.SCRYPT_N >= 2**15
    # Keyed: another salt, another digest; the same inputs, the same digest.
    assert inputs_digest(inputs, b"t" * 16) != first == inputs_digest(inputs, b"s" * 16)


def test_a_verbose_no_op_plan_says_each_entity_s_key_dates_and_copies(
    cli: Runner, quickstart: Path
) -> None:
    """`-v plan` with nothing to do: per entity, its current generation, its expiry with the
    days left and the renewal date, and how many copies match; an entity declared absent is
    said to be on no workstation. Read 100 days after the first apply."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    later = TEST_CLOCK + dt.timedelta(days=100)
    expiry = (TEST_CLOCK + dt.timedelta(days=730)).date()
    renewal = expiry - dt.timedelta(days=60)
    dates = f"valid until {expiry} (630 days; renewal from {renewal})"
    quickstart.write_text(
        quickstart.read_text().replace(
            "  - id: syndicat-eaux\n", "  - id: syndicat-eaux\n    state: absent\n"
        )
    )
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    shown = cli("-v", "plan", quickstart, env={"PROVISIONER_NOW": later.isoformat()})
    assert shown.stdout.splitlines()[:3] == [
        "No changes. Every bi-clé is current and every copy matches what was written.",
        f'  commune-exemple: generation 1 "Commune Exemple" {dates}, 3 copies match what was '
        "written",
        "  syndicat-eaux: absent, on no workstation (its shared locations keep every generation)",
    ], shown.stdout


def test_a_verbose_no_op_plan_counts_the_current_generation_s_copies_within_the_limit(
    cli: Runner, quickstart: Path
) -> None:
    """After a renewal, the shared location still holds generation 1 beside generation 2:
    `-v plan` counts only the current generation's copies (3 for commune-exemple, not 4), and
    under `--limit ws-marches` only the one there ("1 copy matches")."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    renewal = dt.datetime(2028, 10, 15, 10, 0, tzinfo=dt.UTC)
    at = {"PROVISIONER_NOW": renewal.isoformat()}
    assert cli("apply", "--auto-approve", "-q", quickstart, env=at).returncode == 0
    expiry = (renewal + dt.timedelta(days=730)).date()
    dates = f"valid until {expiry} (730 days; renewal from {expiry - dt.timedelta(days=60)})"
    line = f'  commune-exemple: generation 2 "Commune Exemple (2)" {dates}, '
    whole = cli("-v", "plan", quickstart, env=at).stdout
    assert f"{line}3 copies match what was written\n" in whole, whole
    limited = cli("-v", "plan", "--limit", "ws-marches", quickstart, env=at).stdout
    assert f"{line}1 copy matches what was written\n" in limited, limited


def test_a_plan_whose_snapshot_an_apply_overtook_reads_again_and_sees_no_conflict(
    cli: Runner, quickstart: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`plan` reads the state without the lock. A scheduled renewal that commits after the
    plan's snapshot and before it reads the workstations leaves copies of a key the snapshot
    does not know: the plan reads the state again and shows them as what they are, in place,
    not as someone's keys in the way. It observes with the parallelism it was given."""
    from provisioner.engine import observe_and_plan, open_state

    apply(cli, quickstart)
    later = "2028-10-15T08:00:00+00:00"  # inside the 60-day renewal window
    workers = record_workers(monkeypatch, "provisioner.engine.observe")
    monkeypatch.setenv("PROVISIONER_NOW", later)
    with open_state(load_inputs(quickstart, None), create=False) as session:
        apply(cli, quickstart, env={"PROVISIONER_NOW": later})  # commits meanwhile
        renewed = quickstart.parent / "demo-out/workstations/ws-accueil/commune-exemple.g2.p12"
        assert renewed.is_file()
        workers.clear()  # the apply's own observation, when it runs in this process
        _, result = observe_and_plan(session, 1, dt.datetime.fromisoformat(later))
    assert not result.conflicts, result.conflicts
    assert not result.refusals and not result.changes, result.actions
    assert workers and set(workers) == {1}, "--parallel 1: one target observed at a time"


def test_a_changed_certificate_subject_forces_a_new_generation_and_says_why(
    cli: Runner, quickstart: Path
) -> None:
    """The region renames its organisation in the manifest's subject: the certificates the
    platform holds no longer say what the manifest asks, so each entity gets a new
    generation, and the plan says exactly why."""
    apply(cli, quickstart)
    quickstart.write_text(
        quickstart.read_text().replace('organization: "Demo"', 'organization: "Demo Region"')
    )
    planned = cli("plan", quickstart)
    assert planned.returncode == 0, planned.stderr
    why = (
        "[spec-changed] the manifest asks for a different certificate: subject O/OU/C changed "
        "(forces a new generation)"
    )
    assert planned.stdout.count(f"-/+ generation 2: create  {why}") == 2, planned.stdout


def test_the_plan_says_each_copys_reason_word_for_word(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """What a reviewer reads before approving, for the copies an operator meets most: a
    password changed in the manifest; then a copy replaced by another tree's key, one turned
    into a symlink, and a foreign file where a new workstation's copy goes."""
    import shutil

    apply(cli, quickstart)
    secret = quickstart.parent / "secrets/commune-exemple.pass"
    kept = secret.read_text()
    secret.write_text("Another-Password-Here-1!\n")
    planned = cli("plan", quickstart)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert (
        "commune-exemple.g1.p12  [password-changed] the entity's password changed (same key, "
        "re-encoded)\n"
    ) in planned.stdout, planned.stdout
    secret.write_text(kept)

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(quickstart, other / "quickstart.yaml")
    shutil.copytree(quickstart.parent / "secrets", other / "secrets")
    apply(cli, other / "quickstart.yaml")
    ws, theirs = quickstart.parent / "demo-out/workstations", other / "demo-out/workstations"
    marches = ws / "ws-marches/commune-exemple.g1.p12"
    accueil = ws / "ws-accueil/commune-exemple.g1.p12"
    marches.write_bytes((theirs / "ws-marches/commune-exemple.g1.p12").read_bytes())
    accueil.unlink()
    accueil.symlink_to(tmp_path / "elsewhere.p12")
    stray = ws / "ws-accueil/syndicat-eaux.g1.p12"
    stray.write_bytes((theirs / "ws-marches/syndicat-eaux.g1.p12").read_bytes())
    quickstart.write_text(
        quickstart.read_text().replace(
            "workstations: [service-marches]\n", "workstations: [service-marches, ws-accueil]\n"
        )
    )
    planned = cli("plan", quickstart)
    assert planned.returncode == 1, planned.stdout + planned.stderr  # conflicts
    lines = planned.stdout.splitlines()

    def said(start: str, end: str) -> None:
        assert any(x.startswith(start) and x.endswith(end) for x in lines), planned.stdout

    said(
        f"    ! conflict g1 on ws-marches: {marches}  [conflict] the file was replaced since it "
        "was written (holds certificate sha256:",
        ", key NOT in the escrow, unknown to this state): left as it is",
    )
    said(
        f"    ! conflict g1 on ws-accueil: {accueil}  [conflict] a symlink or special file "
        "stands where the copy belongs: left as it is",
        "",
    )
    said(
        f"    ! conflict g1 on ws-accueil: {stray}  [conflict] a file this state did not write "
        "is there (",
        "): left as it is",
    )


def test_after_a_password_change_a_replaced_copy_that_does_not_open_is_never_overwritten(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """An agent put another tree's key (same password then) where ws-marches' copy was; then
    the entity's password changed in the manifest. The file no longer opens with the new
    password, and has the size the copy was written with: it is not a damaged copy to repair
    (it may be somebody's key under the old password), so it is left as it is, a conflict,
    and the entity's other copies wait with it."""
    import shutil

    apply(cli, quickstart)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(quickstart, other / "quickstart.yaml")
    shutil.copytree(quickstart.parent / "secrets", other / "secrets")
    apply(cli, other / "quickstart.yaml")
    rel = "workstations/ws-marches/commune-exemple.g1.p12"
    marches = quickstart.parent / "demo-out" / rel
    foreign = (other / "demo-out" / rel).read_bytes()
    marches.write_bytes(foreign)
    (quickstart.parent / "secrets/commune-exemple.pass").write_text("Another-Password-Here-1!\n")
    planned = cli("plan", quickstart)
    assert (
        f"    ! conflict g1 on ws-marches: {marches}  [conflict] the file was replaced since it "
        "was written (a PKCS#12 that does not open with the entity's password): left as it is\n"
    ) in planned.stdout, planned.stdout
    assert "[drifted]" not in planned.stdout
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1, done.stdout + done.stderr
    assert marches.read_bytes() == foreign, "somebody's key, left as it is"


def test_a_copy_of_this_states_key_where_a_new_workstation_goes_is_replaced_and_said_so(
    cli: Runner, quickstart: Path
) -> None:
    """An agent copied syndicat-eaux's copy from ws-marches to ws-accueil before the manifest
    gave syndicat-eaux ws-accueil: the file holds a key this state keeps, so it is rewritten
    as this state's copy (nothing can be lost by it), and the plan says why, word for word."""
    apply(cli, quickstart)
    ws = quickstart.parent / "demo-out/workstations"
    placed = ws / "ws-accueil/syndicat-eaux.g1.p12"
    placed.write_bytes((ws / "ws-marches/syndicat-eaux.g1.p12").read_bytes())
    quickstart.write_text(
        quickstart.read_text().replace(
            "workstations: [service-marches]\n", "workstations: [service-marches, ws-accueil]\n"
        )
    )
    planned = cli("plan", quickstart)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert (
        f"    ~ rewrite g1 on ws-accueil: {placed}  [unrecorded] the state has no record of "
        "writing this file (a copy this state wrote for another place): replaced, no key is "
        "lost\n"
    ) in planned.stdout, planned.stdout
    apply(cli, quickstart)
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 0


def test_a_fixed_common_name_is_kept_across_renewals_with_its_generation_number(
    cli: Runner, quickstart: Path
) -> None:
    """`common_name` given without {n} or {year}: generation 1's certificate carries it as
    written, generation 2's with " (2)". After the renewal the manifest still asks for what
    the certificate says, so no further generation is made, and the name is what it was."""
    quickstart.write_text(
        quickstart.read_text().replace(
            "      designation: Commune Exemple\n",
            "      designation: Commune Exemple\n      common_name: Mairie de Commune Exemple\n",
        )
    )
    apply(cli, quickstart)
    renewal = {"PROVISIONER_NOW": "2028-10-15T08:00:00+00:00"}
    apply(cli, quickstart, env=renewal)
    settled = cli("plan", "--detailed-exitcode", quickstart, env=renewal)
    assert settled.returncode == 0, settled.stdout
    names = state_rows(
        quickstart,
        "SELECT number, common_name FROM generations WHERE entity = 'commune-exemple' ORDER BY 1",
    )
    assert names == [(1, "Mairie de Commune Exemple"), (2, "Mairie de Commune Exemple (2)")]
