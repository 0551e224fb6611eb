"""Crash safety: apply is killed (SIGKILL) at many points of its work; the next apply converges
and the invariants hold.

A deterministic subset runs in `make test`, on SQLite and, for the points that matter to a
database (the key sealed, the transaction open, just committed, copies being written), on a
real PostgreSQL server; `pytest -m slow tests/test_crash.py` adds 50 randomized kills (point
and moment drawn from a seeded generator).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from provisioner.atomic import TMP_MARK
from provisioner.crypto import pkcs12
from provisioner.crypto.keys import public_key_fingerprint
from provisioner.state.escrow import Escrow
from tests.conftest import Runner
from tests.engine_helpers import ESCROW_PASSPHRASE, PASSWORDS, escrow_of, state_rows

RENEWAL = {"PROVISIONER_NOW": "2028-10-20T09:00:00+00:00"}
POINTS = [
    "after-keygen",
    "after-escrow",
    "mid-commit",
    "after-commit",
    "mid-distribution",
    "mid-rename",
    "after-remove",
]
# The PostgreSQL runs (tests/conftest.py starts the server): a key sealed and not recorded, a
# transaction killed before its COMMIT, one killed right after, copies half written.
PG_FIRST_APPLY = ["after-escrow", "mid-commit", "committed", "mid-distribution"]
PG_RENEWAL = ["after-escrow", "mid-commit"]
CONSULTATION = (
    "version: 1\nconsultations:\n  - reference: C-1\n    entity: commune-exemple\n"
    "    designation: Commune Exemple\n    status: open\n"
)


def killed_apply(
    cli: Runner, manifest: Path, fault: str, env: dict[str, str], *, must_die: bool = True
) -> None:
    done = cli("apply", "--auto-approve", manifest, env={**env, "PROVISIONER_FAULT_INJECT": fault})
    # -9: killed at the point; 0: the point was not reached (randomized runs only).
    allowed = (-9,) if must_die else (-9, 0)
    assert done.returncode in allowed, done.stdout + done.stderr


def assert_converged(cli: Runner, manifest: Path, env: dict[str, str]) -> None:
    done = cli("apply", "--auto-approve", manifest, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    again = cli("plan", "--detailed-exitcode", manifest, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    folder = manifest.parent
    generations = state_rows(manifest, "SELECT entity, number, status, key_sha256 FROM generations")
    copies = state_rows(manifest, "SELECT entity, path, generation FROM copies")
    currents = state_rows(
        manifest,
        "SELECT entity, COUNT(*) FROM generations WHERE status = 'current' GROUP BY entity",
    )
    assert all(n == 1 for _, n in currents), "an entity has two current generations"
    escrow = Escrow.unlock(escrow_of(manifest), ESCROW_PASSPHRASE)
    keys = {sha: escrow.get(str(sha)) for *_, sha in generations}  # every one is escrowed
    for path in (folder / "demo-out").rglob("*"):
        assert TMP_MARK not in path.name, f"partial file left: {path}"
        if path.suffix == ".p12":
            entity = path.name.split(".")[0]
            bundle = pkcs12.decode(path.read_bytes(), PASSWORDS[entity])  # never partial
            assert public_key_fingerprint(bundle.key) in keys
    for entity, number, status, _sha in generations:
        if status in ("current", "retained"):
            on_workstations = [
                p
                for e, p, _ in copies
                if e == entity and "workstations" in p and p.endswith(f".g{number}.p12")
            ]
            assert on_workstations, f"{entity} g{number} ({status}) held by no workstation"


@pytest.mark.parametrize(
    ("state_backend", "point"),
    [("sqlite", p) for p in POINTS if p != "after-remove"]
    + [("postgresql", p) for p in PG_FIRST_APPLY],
    indirect=["state_backend"],
)
def test_kill_during_first_apply_then_converge(cli: Runner, quickstart: Path, point: str) -> None:
    killed_apply(cli, quickstart, point, {})
    assert_converged(cli, quickstart, {})


@pytest.mark.parametrize(
    ("state_backend", "point"),
    [("sqlite", p) for p in ("after-escrow", "mid-commit", "mid-distribution", "after-remove")]
    + [("postgresql", p) for p in PG_RENEWAL],
    indirect=["state_backend"],
)
def test_kill_during_renewal_keeps_the_bound_key(cli: Runner, quickstart: Path, point: str) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0  # the key, then C-1
    (quickstart.parent / "c.yaml").write_text(CONSULTATION)
    text = quickstart.read_text().replace("version: 1\n", "version: 1\nconsultations: c.yaml\n")
    quickstart.write_text(text)
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    killed_apply(cli, quickstart, f"{point}:2" if point == "mid-distribution" else point, RENEWAL)
    assert_converged(cli, quickstart, RENEWAL)
    held = sorted(
        p.name for p in (quickstart.parent / "demo-out/workstations/ws-accueil").iterdir()
    )
    assert held == ["commune-exemple.g1.p12", "commune-exemple.g2.p12"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(50))
def test_randomized_kills(cli: Runner, quickstart: Path, seed: int) -> None:
    rng = random.Random(seed)
    point = rng.choice(POINTS)
    nth = rng.randint(1, 4)
    renewal = rng.random() < 0.5
    if renewal:
        assert cli("apply", "--auto-approve", quickstart).returncode == 0
    env = RENEWAL if renewal else {}
    killed_apply(cli, quickstart, f"{point}:{nth}", env, must_die=False)
    assert_converged(cli, quickstart, env)
