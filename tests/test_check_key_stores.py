"""`provisioner check` and the agents' key stores (issue 28): what a workstation's receipt
says about each agent's store, judged against the openings of the consultations bound to the
key, at the edges of --warn-days and --receipt-max-age.

One workstation installs the key in the NSS stores of alice and bob; the test leaves the
receipt the agent_stores role would have left, then reads `check --json`: its exit code and
each finding (severity, entity, code, message), in the order a monitoring system shows them.
Dates are relative to the pinned clock (TEST_CLOCK)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES, TEST_CLOCK, Runner, run_cli
from tests.manifests import Manifest

# One shared location, and one workstation that installs the key in alice's and bob's NSS stores.
MANIFEST = (
    Manifest(escrow={"passphrase": {"file": "secrets/escrow.pass"}})
    .location("share", path="out/share")
    .workstation(
        "ws-m1",
        path="out/ws-m1",
        install={"store": "nss", "users": ["alice", "bob"], "nss_database": "/srv/nss/{user}"},
    )
    .entity(
        "commune-exemple",
        name="Commune",
        designation="Commune Exemple",
        password={"file": "secrets/commune-exemple.pass"},
        shared_locations=["share"],
        workstations=["ws-m1"],
    )
)
WHAT = 'generation 1 "Commune Exemple" ws-m1'
PENDING = ("WARNING", "commune-exemple", "pending")  # the bindings check reads, not yet applied


def at(days: float) -> str:
    """TEST_CLOCK shifted by `days`, as the receipts and consultations files write it."""
    return (TEST_CLOCK + dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The manifest applied once, and the copy the receipt must name (from `inventory`)."""
    folder = tmp_path_factory.mktemp("stores")
    (folder / "secrets").mkdir()
    for name in ("escrow.pass", "commune-exemple.pass"):
        shutil.copy(EXAMPLES / "secrets" / name, folder / "secrets" / name)
    manifest = folder / "m.yaml"
    MANIFEST.write(manifest)
    done = run_cli("apply", "--auto-approve", manifest)
    assert done.returncode == 0, done.stdout + done.stderr
    inventory = run_cli("inventory", "--json", manifest)
    assert inventory.returncode == 0, inventory.stderr
    copy: dict[str, Any] = json.loads(inventory.stdout)["hosts"]["ws-m1"]["copies"][0]
    return manifest, copy


def leave_receipt(manifest: Path, copy: dict[str, Any], **stores: dict[str, object]) -> None:
    """The receipt of generation 1 on ws-m1, one entry per user given."""
    document = {
        "format_version": 2,
        "entity": "commune-exemple",
        "generation": 1,
        "thumbprint_sha1": copy["thumbprint_sha1"],
        "cert_sha256": copy["cert_sha256"],
        "stores": [
            {"user": user, "store": f"nss:/srv/nss/{user}"} | s for user, s in stores.items()
        ],
    }
    (manifest.parent / "out" / "ws-m1" / "commune-exemple.g1.receipt.json").write_text(
        json.dumps(document)
    )


def installed(observed_days_ago: float) -> dict[str, object]:
    return {
        "outcome": "installed",
        "private_key": True,
        "installed_at": at(-20),
        "observed_at": at(-observed_days_ago),
    }


IMPORT_FAILED: dict[str, object] = {
    "outcome": "import-failed",
    "private_key": False,
    "observed_at": at(0),
    "detail": "pk12util: SEC_ERROR_BAD_PASSWORD",
}


def bound(manifest: Path, *openings: str | None) -> Path:
    """Consultations AO-1, AO-2... bound to generation 1, opening at the dates given (None:
    neither a deadline nor an opening known)."""
    lines = ["version: 1", "consultations:"]
    for n, opening in enumerate(openings, 1):
        dates = f", opening: '{opening}'" if opening else ""
        lines.append(
            f"  - {{reference: AO-{n}, entity: commune-exemple, designation: Commune Exemple, "
            f"status: open{dates}}}"
        )
    path = manifest.parent / "consultations.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def check(cli: Runner, manifest: Path, *args: str | Path) -> tuple[int, list[tuple[str, ...]]]:
    """Exit code and findings (severity, entity, code, message) of `check --json`, in order."""
    done = cli("check", "--json", manifest, *args)
    assert not done.stderr, done.stderr
    document = json.loads(done.stdout)
    assert document["exit_code"] == done.returncode
    assert document["status"] == {0: "OK", 1: "WARNING", 2: "CRITICAL"}[done.returncode]
    findings: list[tuple[str, ...]] = []
    for f in document["findings"]:
        assert set(f) == {"severity", "entity", "code", "message"}, f
        findings.append((f["severity"], f["entity"], f["code"], f["message"]))
    return done.returncode, findings


def without_pending(findings: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [f for f in findings if f[:3] != PENDING]


# An opening 30 days and an hour away: within --warn-days 30, not within 29.
IN_30_DAYS = at(30 + 1 / 24)
NEXT_YEAR = at(400)


@pytest.fixture
def site(applied: tuple[Path, dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    manifest, _ = applied
    receipt = manifest.parent / "out" / "ws-m1" / "commune-exemple.g1.receipt.json"
    receipt.unlink(missing_ok=True)
    return applied


def test_a_failed_import_is_critical_when_a_bound_opening_is_within_the_warn_days(
    cli: Runner, site: tuple[Path, dict[str, Any]]
) -> None:
    """alice's store holds the key, bob's import failed: bob's store is named with both
    consultations, CRITICAL on the --warn-days day itself, before the pending bindings."""
    manifest, copy = site
    leave_receipt(manifest, copy, alice=installed(observed_days_ago=0), bob=IMPORT_FAILED)
    c = bound(manifest, IN_30_DAYS, NEXT_YEAR)
    code, findings = check(cli, manifest, "--consultations", c, "--warn-days", "30")
    assert code == 2
    assert findings == [
        (
            "CRITICAL",
            "commune-exemple",
            "bound-not-in-store",
            f"{WHAT} [bob]: nss:/srv/nss/bob: import failed, observed 2026-11-30 09:00 (today): "
            "pk12util: SEC_ERROR_BAD_PASSWORD; bound to AO-1, AO-2: the agent could not open "
            "those bids",
        ),
        (*PENDING, "2 changes pending (new-binding): run provisioner apply"),
    ]


def test_a_failed_import_is_a_warning_while_every_bound_opening_is_further_away(
    cli: Runner, site: tuple[Path, dict[str, Any]]
) -> None:
    manifest, copy = site
    leave_receipt(manifest, copy, alice=installed(observed_days_ago=0), bob=IMPORT_FAILED)
    c = bound(manifest, IN_30_DAYS, NEXT_YEAR)
    code, findings = check(cli, manifest, "--consultations", c, "--warn-days", "29")
    assert code == 1
    assert without_pending(findings) == [
        (
            "WARNING",
            "commune-exemple",
            "not-in-store",
            f"{WHAT} [bob]: nss:/srv/nss/bob: import failed, observed 2026-11-30 09:00 (today): "
            "pk12util: SEC_ERROR_BAD_PASSWORD: import it",
        )
    ]


def test_a_bound_consultation_without_dates_makes_a_failed_import_critical(
    cli: Runner, site: tuple[Path, dict[str, Any]]
) -> None:
    """Neither its deadline nor its opening is known: its bids may be opened any day."""
    manifest, copy = site
    leave_receipt(manifest, copy, alice=installed(observed_days_ago=0), bob=IMPORT_FAILED)
    c = bound(manifest, NEXT_YEAR, None)
    code, findings = check(cli, manifest, "--consultations", c, "--warn-days", "29")
    assert code == 2
    assert [f[:3] for f in without_pending(findings)] == [
        ("CRITICAL", "commune-exemple", "bound-not-in-store")
    ]
    assert findings[0][3].endswith("; bound to AO-1, AO-2: the agent could not open those bids")


def test_a_receipt_too_old_is_critical_near_a_bound_opening_and_a_warning_before(
    cli: Runner, site: tuple[Path, dict[str, Any]]
) -> None:
    """alice's store was last observed 8 days ago (--receipt-max-age 7): not observed since,
    CRITICAL with the consultations it puts at risk within --warn-days, else a WARNING."""
    manifest, copy = site
    leave_receipt(manifest, copy, alice=installed(observed_days_ago=8), bob=installed(0))
    c = bound(manifest, IN_30_DAYS, NEXT_YEAR)
    stale = (
        f"{WHAT} [alice]: nss:/srv/nss/alice: not observed since 2026-11-22 09:00 (in the store "
        "of user alice then; receipts older than 7 days prove nothing)"
    )
    code, findings = check(cli, manifest, "--consultations", c, "--warn-days", "30")
    assert code == 2
    assert without_pending(findings) == [
        (
            "CRITICAL",
            "commune-exemple",
            "store-not-observed",
            f"{stale}; bound to AO-1, AO-2: run the agent_stores role to look again",
        )
    ]
    code, findings = check(cli, manifest, "--consultations", c, "--warn-days", "29")
    assert code == 1
    assert without_pending(findings) == [
        (
            "WARNING",
            "commune-exemple",
            "store-not-observed",
            f"{stale}: run the agent_stores role to look again",
        )
    ]


def test_a_receipt_proves_the_store_for_receipt_max_age_days_and_not_a_minute_more(
    cli: Runner, site: tuple[Path, dict[str, Any]]
) -> None:
    """Without a consultation: a store observed exactly --receipt-max-age days ago is still
    installed (OK); older, it is not observed since (WARNING, nothing bound)."""
    manifest, copy = site
    leave_receipt(manifest, copy, alice=installed(observed_days_ago=7), bob=installed(0))
    assert check(cli, manifest) == (0, [])
    code, findings = check(cli, manifest, "--receipt-max-age", "6")
    assert code == 1
    assert findings == [
        (
            "WARNING",
            "commune-exemple",
            "store-not-observed",
            f"{WHAT} [alice]: nss:/srv/nss/alice: not observed since 2026-11-23 09:00 (in the "
            "store of user alice then; receipts older than 6 days prove nothing): run the "
            "agent_stores role to look again",
        )
    ]
