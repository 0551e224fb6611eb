"""Histories the stateful suite (tests/test_stateful.py) found, kept as plain tests.

Each test replays one shrunk history through the same machine, rule by rule, and asserts the
invariant it broke (issues 14, 15 and 16 fixed them; each failed on the code before). A history
found whose fix is still to be built is marked xfail(strict=True) with its issue, and its rule
or check listed in PENDING_FIXES in tests/test_stateful.py, until the fix lands.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import oracle
from tests.test_stateful import ProvisionerHistory


class Choose:
    """Stands for hypothesis' `data` argument: hands out the given values in order."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values)

    def draw(self, strategy: Any, label: str | None = None) -> Any:
        return self.values.pop(0)


@pytest.fixture
def h() -> Iterator[ProvisionerHistory]:
    machine = ProvisionerHistory()
    machine.first_apply()
    yield machine
    machine.teardown()


def holds(h: ProvisionerHistory, *names: str) -> None:
    """Check the named invariants now, whatever PENDING_FIXES says."""
    from tests import test_stateful

    saved = dict(test_stateful.PENDING_FIXES)
    test_stateful.PENDING_FIXES.clear()
    try:
        for name in names:
            getattr(h, name)()
    finally:
        test_stateful.PENDING_FIXES.update(saved)


NO = {"then_apply": False}


def test_lost_state_then_apply_keeps_every_key(h: ProvisionerHistory) -> None:
    h.world_loses_the_state(**NO)
    h.apply()
    h.recover()
    h.apply()
    holds(h, "foreign_files_untouched", "no_key_lost")


def test_missing_keyring_is_never_replaced(h: ProvisionerHistory) -> None:
    h.world_deletes_the_keyring(**NO)
    h.world_kills_an_apply(point="after-keygen", nth=1)
    h.apply()
    holds(h, "never_a_second_keyring")


def test_older_state_restored_after_a_renewal(h: ProvisionerHistory) -> None:
    h.world_takes_a_backup_of_the_state()
    h.clock_moves_to_renewal_or_expiry(data=Choose("commune-a"), past_expiry=False, **NO)
    h.apply()
    h.world_restores_an_older_state(data=Choose(h.m.backups[0]), **NO)
    h.clock_moves_days(days=1, then_apply=True)
    h.recover()
    h.apply()
    holds(h, "foreign_files_untouched", "no_key_lost")


def test_deleted_escrow_key_then_absent_entity_keeps_the_key(h: ProvisionerHistory) -> None:
    key_file = next(
        p
        for p in sorted((h.state_dir / "escrow").glob("*.key"))
        if h.m.keys[p.stem].entity == "commune-a"
    )
    h.world_deletes_an_escrow_key_file(data=Choose(key_file), then_apply=True)
    h.set_entity_absent(data=Choose("commune-a"), then_apply=True)
    holds(h, "no_key_lost")


def test_retired_copy_deleted_from_a_shared_location_comes_back(h: ProvisionerHistory) -> None:
    h.clock_moves_to_renewal_or_expiry(data=Choose("commune-a"), past_expiry=False, **NO)
    h.apply()
    retired = h.target_dir("share-1") / "commune-a.g1.p12"
    assert h.retired_on_a_location(retired)
    h.world_damages_a_copy_on_a_shared_location(data=Choose(retired), how="delete", **NO)
    h.apply()
    holds(h, "every_generation_on_every_shared_location")


def test_renamed_bound_key_survives_the_renewal(h: ProvisionerHistory) -> None:
    h.add_consultation(data=Choose("commune-a"), deadline_in=50, opening_after=10, then_apply=True)
    h.rename_a_bound_designation(data=Choose("commune-a"), keep_common_name=True, then_apply=True)
    h.clock_moves_to_renewal_or_expiry(data=Choose("commune-a"), past_expiry=False, **NO)
    h.apply()
    assert h.m.last_apply_ok
    holds(h, "bound_keys_everywhere_after_apply", "check_critical_when_a_bound_key_is_missing")


def test_platform_export_with_the_new_name_is_accepted(h: ProvisionerHistory) -> None:
    h.add_consultation(data=Choose("commune-a"), deadline_in=50, opening_after=10, then_apply=True)
    h.rename_a_bound_designation(data=Choose("commune-a"), keep_common_name=True, then_apply=True)
    c = next(iter(h.m.consultations.values()))
    h.platform_renames_the_key_in_its_export(data=Choose(c.reference), **NO)
    assert c.designation.endswith(" v2")
    h.apply()  # sound_history_applies: no reason to refuse


def test_check_is_critical_when_a_bound_copy_is_deleted(h: ProvisionerHistory) -> None:
    h.add_consultation(data=Choose("commune-a"), deadline_in=10, opening_after=5, then_apply=True)
    copy = h.target_dir("ws-a") / "commune-a.g1.p12"
    h.world_damages_a_copy_on_a_workstation(data=Choose(copy), how="delete", **NO)
    holds(h, "check_critical_when_a_bound_key_is_missing")


def test_designation_only_change_keeps_the_key(h: ProvisionerHistory) -> None:
    h.rename_designation(data=Choose("commune-a"), keep_common_name=False, then_apply=True)
    holds(h, "renaming_keeps_the_key")


def test_stray_file_where_a_new_generation_goes_is_kept(h: ProvisionerHistory) -> None:
    h.change_issuer(data=Choose("commune-a"), **NO)
    h.world_drops_a_stray_file(data=Choose("commune-a", 2, False), place="ws-a", **NO)
    h.apply()
    holds(h, "foreign_files_untouched")


def test_a_look_alike_dropped_on_an_intact_state_is_never_taken_by_recover(
    h: ProvisionerHistory,
) -> None:
    """Issue 27, item 2: a PKCS#12 of another key, opening with the entity's password, named
    as its next generation on an agent's workstation; recover on the intact state took it as
    current and the next apply rewrote it and took the real key off the workstations."""
    h.world_drops_a_stray_file(data=Choose("commune-a", 2, True), place="ws-a", **NO)
    h.recover()
    h.apply()
    holds(h, "foreign_files_untouched", "no_key_lost", "distributed_keys_are_escrowed_and_recorded")
    current = "SELECT number FROM generations WHERE entity = 'commune-a' AND status = 'current'"
    assert h.state_rows(current) == [(1,)], "generation 1 stays current"
    assert (h.target_dir("ws-a") / "commune-a.g1.p12").is_file(), "the real key stays on ws-a"


def test_share_copy_deleted_then_retired_by_the_same_apply(h: ProvisionerHistory) -> None:
    copy = h.target_dir("share-1") / "commune-a.g1.p12"
    h.world_damages_a_copy_on_a_shared_location(data=Choose(copy), how="delete", **NO)
    h.change_key_size(data=Choose("commune-a"), size=3072, **NO)
    h.apply()
    holds(h, "every_generation_on_every_shared_location")


def test_retired_copy_made_readable_on_a_share_is_repaired(h: ProvisionerHistory) -> None:
    h.change_key_size(data=Choose("commune-a"), size=3072, then_apply=True)
    retired = h.target_dir("share-1") / "commune-a.g1.p12"
    assert h.retired_on_a_location(retired)
    h.world_damages_a_copy_on_a_shared_location(data=Choose(retired), how="chmod", **NO)
    h.apply()
    holds(h, "copies_are_private")


def test_absent_then_present_keeps_every_generation_on_the_share(h: ProvisionerHistory) -> None:
    h.set_entity_absent(data=Choose("commune-a"), then_apply=True)
    h.set_entity_present(data=Choose("commune-a"), then_apply=True)
    assert h.m.last_apply_ok
    holds(h, "every_generation_on_every_shared_location")


def test_new_shared_location_receives_every_generation(h: ProvisionerHistory) -> None:
    h.change_key_size(data=Choose("commune-a"), size=3072, then_apply=True)
    h.add_a_shared_location_to_an_entity(data=Choose("commune-a"), name="share-2", then_apply=True)
    assert h.m.last_apply_ok
    holds(h, "every_generation_on_every_shared_location")


# The guards that mutation testing found no history reached (issue 26): each history walks one,
# and the mutant that drops the guard fails its invariant.


def bound_then(h: ProvisionerHistory, days: int = 1) -> None:
    """commune-a's current key bound to a new consultation, `days` later, by an apply."""
    h.add_consultation(data=Choose("commune-a"), deadline_in=50, opening_after=5, **NO)
    h.clock_moves_days(days=days, then_apply=True)
    assert any(c.key_sha256 for c in h.m.consultations.values()), "the consultation is bound"


def test_absent_after_a_renewal_keeps_the_bound_older_generation(h: ProvisionerHistory) -> None:
    bound_then(h)
    h.clock_moves_to_renewal_or_expiry(data=Choose("commune-a"), past_expiry=False, **NO)
    h.apply()
    assert h.m.last_apply_ok
    h.set_bound_entity_absent(data=Choose("commune-a"), then_apply=True)  # refused, said so
    assert not h.m.last_apply_ok
    h.m.last_apply_ok = True  # whatever apply said: the bound keys must still be everywhere
    holds(h, "bound_keys_everywhere_after_apply", "bound_keys_on_a_shared_location_after_apply")


def test_the_last_shared_location_of_a_bound_entity_keeps_its_key(h: ProvisionerHistory) -> None:
    bound_then(h)
    h.remove_the_last_shared_location(data=Choose("commune-a"), then_apply=True)  # refused
    assert not h.m.last_apply_ok
    h.m.last_apply_ok = True
    holds(h, "bound_keys_on_a_shared_location_after_apply", "no_key_lost")


def test_a_retired_generations_lost_escrow_key_is_taken_back(h: ProvisionerHistory) -> None:
    h.clock_moves_to_renewal_or_expiry(data=Choose("commune-a"), past_expiry=False, **NO)
    h.apply()
    rows = h.state_rows(
        "SELECT key_sha256 FROM generations WHERE entity = 'commune-a' AND status = 'retired'"
    )
    assert rows, "generation 1 is retired"
    key_file = h.state_dir / "escrow" / f"{rows[0][0]}.key"
    h.world_deletes_an_escrow_key_file(data=Choose(key_file), then_apply=True)
    assert h.m.last_apply_ok
    assert key_file.is_file(), "apply took the retired generation's key back"
    holds(
        h, "lost_escrow_keys_taken_back_after_apply", "distributed_keys_are_escrowed_and_recorded"
    )


def test_a_password_changed_after_a_lost_state_is_taken_back_with_the_previous_one(
    h: ProvisionerHistory,
) -> None:
    """Issue 27, item 5: lost state, then a password change; recover with the previous
    password takes the copies back and the next apply re-encodes them: nothing is stuck."""
    h.world_loses_the_state(**NO)
    h.change_password(data=Choose("commune-a"), **NO)
    h.recover_with_the_previous_password(
        data=Choose(
            "commune-a",
            *sorted(h.m.passwords_ever["commune-a"] - {h.m.entities["commune-a"].password}),
        )
    )
    h.apply()
    holds(h, "no_key_lost", "foreign_files_untouched", "distributed_keys_are_escrowed_and_recorded")
    h.second_apply_plans_nothing()
    assert not h.m.state_in_doubt, "recover took everything back"


def test_a_rename_the_export_already_shows_keeps_the_bound_key(h: ProvisionerHistory) -> None:
    """Issue 27, item 1: renamed on the platform and in the manifest, the export naming the
    new designation for a new consultation; the renewal keeps that key on the workstations."""
    h.rename_with_the_export_already_renamed(
        data=Choose("commune-a"), keep_common_name=False, new_consultation=True, **NO
    )
    h.apply()
    holds(h, "distributed_keys_are_escrowed_and_recorded")
    assert not h.bound_keys_missing(), "bound key on every workstation"
    h.clock_moves_to_renewal_or_expiry(data=Choose("commune-a"), past_expiry=False, **NO)
    h.apply()
    assert not h.bound_keys_missing(), "the renewal kept the bound key on the workstations"
    holds(h, "no_key_lost", "bound_keys_everywhere_after_apply")


def test_an_entity_left_out_of_recover_and_put_back_keeps_its_copies(
    h: ProvisionerHistory,
) -> None:
    """Found by the long profile's fixed seed: a lost state, an entity dropped from the
    manifest before recover (its copies are not read), then put back with a new password. Its
    copies are not the rebuilt state's until a recover reads them: apply leaves them as they
    are, and recover given the password they have takes them back into escrow and state."""
    h.world_loses_the_state(**NO)
    h.remove_entity(data=Choose("commune-a"))
    assert "commune-a" not in h.m.entities
    h.recover()
    holds(h, "distributed_keys_are_escrowed_and_recorded", "foreign_files_untouched")
    h.add_entity()
    assert "commune-a" in h.m.entities
    holds(h, "distributed_keys_are_escrowed_and_recorded")
    assert h.m.state_in_doubt, "the rebuilt state does not know its keys"
    h.apply()
    holds(h, "foreign_files_untouched", "no_key_lost")
    # Put back with a new password: its copies are under the one it had.
    former = sorted(h.m.passwords_ever["commune-a"] - {h.m.entities["commune-a"].password})
    h.recover_with_the_previous_password(data=Choose("commune-a", *former))
    assert not h.m.state_in_doubt, "recover took its copies back"
    h.apply()
    holds(
        h,
        "distributed_keys_are_escrowed_and_recorded",
        "foreign_files_untouched",
        "no_key_lost",
        "bound_keys_everywhere_after_apply",
    )


def test_check_names_every_consultation_bound_to_a_garbled_copy(h: ProvisionerHistory) -> None:
    """Found by the long profile's fixed seed: two open consultations bound to one generation
    whose workstation copy the world garbled; `check` named only one of them."""
    h.add_consultation(data=Choose("commune-a"), deadline_in=18, opening_after=9, **NO)
    h.add_consultation(data=Choose("commune-a"), deadline_in=16, opening_after=7, **NO)
    h.apply()
    h.world_damages_a_copy_on_a_workstation(
        data=Choose(h.target_dir("ws-a") / "commune-a.g1.p12"), how="garble", **NO
    )
    holds(h, "check_critical_when_a_bound_key_is_missing")


def test_a_rename_in_the_apply_that_renews_leaves_nothing_to_do(h: ProvisionerHistory) -> None:
    """Found by the long profile's fixed seed: a new designation in the apply that renews a
    key no consultation holds. The outgoing generation keeps its name (its copy on the shared
    location is not rewritten for it), so the next plan is a no-op."""
    h.change_key_size(data=Choose("syndicat-b"), size=3072, **NO)
    h.rename_designation(data=Choose("syndicat-b"), keep_common_name=True, **NO)
    h.apply()
    holds(h, "second_apply_plans_nothing", "renaming_keeps_the_key", "no_key_lost")


@pytest.mark.parametrize("how", ["absent", "last shared location"])
def test_a_consultation_bound_by_the_same_apply_holds_its_key(
    h: ProvisionerHistory, how: str
) -> None:
    """Found with PROVISIONER_STATEFUL_PENDING=check: a new consultation in the export and, in
    the same apply, the entity declared absent or its last shared location removed. The
    binding this apply records holds the key: the apply is refused, saying so, and the key
    stays everywhere."""
    h.add_consultation(data=Choose("syndicat-b"), deadline_in=55, opening_after=2, **NO)
    if how == "absent":
        h.set_bound_entity_absent(data=Choose("syndicat-b"), **NO)
    else:
        h.remove_the_last_shared_location(data=Choose("syndicat-b"), **NO)
    assert h.expected_refusals(), "the model expects a refusal"
    h.apply()
    assert not h.m.last_apply_ok, "the apply was refused"
    holds(h, "no_key_lost", "bound_keys_everywhere_after_apply")
    held = h.keys_in(h.target_dir("ws-a"), h.m.passwords_ever)
    assert any(k.entity == "syndicat-b" for k in (h.m.keys[sha] for sha in held if sha in h.m.keys))


def test_absent_never_removes_the_last_copies_of_a_key_the_escrow_lost(
    h: ProvisionerHistory,
) -> None:
    """Found by the fixed seed with the absent rule drawn: an entity with no shared location
    left, its escrowed key file deleted, then declared absent. The apply keeps the copies of
    that key (saying so), and declaring the entity present again takes it back."""
    h.remove_the_last_shared_location(data=Choose("syndicat-b"), **NO)
    h.apply()
    assert h.m.last_apply_ok and not h.m.entities["syndicat-b"].locations
    (key,) = [sha for sha, k in h.m.keys.items() if k.entity == "syndicat-b"]
    (h.state_dir / "escrow" / f"{key}.key").unlink()
    h.world_event()
    h.m.escrow_in_doubt = True
    h.set_entity_absent(data=Choose("syndicat-b"), **NO)
    h.apply()
    holds(h, "no_key_lost")
    said = h.run("plan", str(h.manifest))
    assert "private key is missing from the escrow: its copies are kept" in said.out, said.out
    h.set_entity_present(data=Choose("syndicat-b"), **NO)
    h.apply()
    holds(h, "no_key_lost", "lost_escrow_keys_taken_back_after_apply")
    assert (h.state_dir / "escrow" / f"{key}.key").is_file(), "taken back into the escrow"


def test_a_lost_state_never_starts_over_beside_a_later_generation(h: ProvisionerHistory) -> None:
    """Found by the fixed seed with the last-shared-location rule drawn ("a second apply with
    work after lost states and last-location removals"): after a renewal the workstations
    hold only generation 2; the state is lost and the entity's last shared location taken
    out of the manifest. Apply made a new first key beside generation 2 (nothing stood at the
    g1 paths) and the next plan called the real key's copies conflicts. Now the copy named
    beyond the next number holds the entity until recover takes it back."""
    h.clock_moves_to_renewal_or_expiry(data=Choose("commune-a"), past_expiry=False, **NO)
    h.apply()
    assert h.m.last_apply_ok
    (real,) = [
        sha
        for sha, k in h.m.keys.items()
        if k.entity == "commune-a" and sha in h.keys_in(h.target_dir("ws-a"), h.m.passwords_ever)
    ]
    h.world_loses_the_state(**NO)
    h.remove_the_last_shared_location(data=Choose("commune-a"), **NO)
    h.apply()  # refused, naming recover (refusal_names_recover)
    assert not h.m.last_apply_ok
    assert not (h.target_dir("ws-a") / "commune-a.g1.p12").exists(), "no new first key"
    holds(h, "foreign_files_untouched", "no_key_lost")
    h.recover()
    h.apply()
    assert h.m.last_apply_ok
    holds(h, "second_apply_plans_nothing", "no_key_lost", "foreign_files_untouched")
    current = h.current("commune-a")
    assert current is not None
    assert oracle.fingerprint(current[1].public_key()) == real, "generation 2 stays current"


def test_a_binding_made_while_no_shared_location_is_declared_is_owed_one_once_there_is(
    h: ProvisionerHistory,
) -> None:
    """Found by the fixed seed with the last-shared-location rule drawn ("a bound key on no
    shared location after ... a re-added location"): a fault of the model. The rename rule
    that binds a new consultation itself did not note that its entity declared no shared
    location then (harvest() does, for the bindings the state makes), so the model owed it
    a location copy the tool rightly could not make. Once a location is declared again,
    the bound key goes there."""
    h.remove_the_last_shared_location(data=Choose("commune-a"), then_apply=True)
    h.rename_with_the_export_already_renamed(
        data=Choose("commune-a"), keep_common_name=True, new_consultation=True, then_apply=True
    )
    assert h.m.last_apply_ok
    (c,) = h.m.consultations.values()
    assert c.bound_without_location
    holds(h, "bound_keys_on_a_shared_location_after_apply", "bound_keys_everywhere_after_apply")
    h.add_a_shared_location_to_an_entity(data=Choose("commune-a"), name="share-2", then_apply=True)
    assert h.m.last_apply_ok
    holds(
        h,
        "bound_keys_on_a_shared_location_after_apply",
        "every_generation_on_every_shared_location",
    )
    assert h.keys_in(h.target_dir("share-2"), h.m.passwords_ever).get(c.key_sha256 or "")


@pytest.mark.parametrize(
    ("same_targets", "original_retired"), [(False, False), (True, False), (False, True)]
)
def test_a_copy_of_the_tree_in_use_never_touches_the_originals_files(
    h: ProvisionerHistory, same_targets: bool, original_retired: bool
) -> None:
    """Issue 27, item 3, as the copied-tree rule walks it: a renewal is due when the operator
    copies the tree and runs apply, `recover --moved` and apply there (the copy renews and
    would retire generation 1). `recover --moved` is refused while the original holds its
    state, naming it (or re-homes while that state is away, and the removals are held back
    again once it is back); nothing of the original is removed or replaced. With the same
    target folders the copy's new generation is a file the original did not write: its
    apply leaves it, and renews once the operator has moved it away."""
    h.clock_moves_to_renewal_or_expiry(data=Choose("commune-a"), past_expiry=False, **NO)
    h.operator_runs_a_copy_of_the_tree(same_targets=same_targets, original_retired=original_retired)
    seen = h.m.copied_tree
    assert seen is not None and seen.moved is not None
    if original_retired:
        assert seen.moved.code == 0 and "the state's home becomes" in seen.moved.out
    holds(h, "copied_tree_leaves_the_original_alone", "foreign_files_untouched", "no_key_lost")
    assert bool(h.m.strays) == same_targets, "the copy's g2 stands in the original's folders"
    h.apply()
    holds(h, "foreign_files_untouched", "no_key_lost")
    for stray in sorted(h.m.strays):
        h.operator_removes_a_stray_file(data=Choose(stray))
    h.apply()
    assert h.m.last_apply_ok
    holds(h, "second_apply_plans_nothing", "every_generation_on_every_shared_location")


@pytest.mark.parametrize("number", [1, 2, 3])
def test_a_pkcs12_declaring_2_31_iterations_is_refused_at_once_and_left(
    h: ProvisionerHistory, number: int
) -> None:
    """Issue 27, item 4, as the costly-PKCS#12 rule walks it: dropped on a workstation as a
    generation the entity has (its copy there deleted first), its next, or one beyond; plan,
    recover and apply answer at once and leave it; once removed, apply converges."""
    copy = h.target_dir("ws-a") / "commune-a.g1.p12"
    if number == 1:
        h.world_damages_a_copy_on_a_workstation(data=Choose(copy), how="delete", **NO)
    h.world_drops_a_costly_pkcs12(data=Choose("commune-a", number), place="ws-a", then_apply=True)
    dropped = h.target_dir("ws-a") / f"commune-a.g{number}.p12"
    assert dropped in h.m.strays
    assert not h.m.last_apply_ok, "commune-a is held while the file stands"
    holds(h, "commands_answer_in_bounded_time", "foreign_files_untouched", "no_key_lost")
    said = h.run("plan", str(h.manifest))
    assert "2,147,483,647 key-derivation iterations" in said.out + said.err, said.out
    h.operator_removes_a_stray_file(data=Choose(dropped))
    h.apply()
    assert h.m.last_apply_ok
    holds(h, "commands_answer_in_bounded_time", "second_apply_plans_nothing", "no_key_lost")


@pytest.mark.parametrize("kind", ["named pipe", "device"])
def test_a_consultations_file_made_a_pipe_or_a_device_is_refused_at_once(
    h: ProvisionerHistory, kind: str
) -> None:
    """Issue 27, item 4, as the unreadable-export rule walks it: every command refuses the
    file by name at once and leaves it as it is; the next export puts things right."""
    h.add_consultation(data=Choose("commune-a"), deadline_in=20, opening_after=2, then_apply=True)
    h.world_makes_the_consultations_file_unreadable(kind=kind)
    seen = h.m.unreadable
    assert seen is not None and set(seen.answers) >= {"plan", "apply", "check"}
    assert seen.answers["check"].code == 3, "check: UNKNOWN"
    holds(h, "unreadable_inputs_refused_at_once", "commands_answer_in_bounded_time")
    h.apply()
    assert h.m.last_apply_ok
    holds(h, "bound_keys_everywhere_after_apply", "second_apply_plans_nothing")


def test_a_lost_state_with_every_entity_absent_owes_no_key_it_cannot_know(
    h: ProvisionerHistory,
) -> None:
    """Found by the fixed seed with the absent rule drawn: two faults of the model. The state
    lost, every entity declared absent (one bound to an open consultation), a shared location
    added: apply has no generation to act on and exits 0 having changed no file (it records
    the binding as a key it does not manage); the model owed the bound key on the new
    location, which no apply can put back before a recover tells the state that key. And the
    model's clock stood still across the loss, so that binding and the generation recover
    brings back had the same instant: the program read it as "got the name after the
    binding" and would take it off the workstations. A minute later, as a real loss is, the
    recovered generation is the binding's key: the absent entity is refused while bound,
    and back present its key is kept through the renewal and reaches share-2."""
    h.add_consultation(data=Choose("commune-a"), deadline_in=40, opening_after=5, then_apply=True)
    h.world_loses_the_state(**NO)
    h.set_entity_absent(data=Choose("syndicat-b"), **NO)
    h.set_bound_entity_absent(data=Choose("commune-a"), **NO)
    h.add_a_shared_location_to_an_entity(data=Choose("commune-a"), name="share-2", **NO)
    files = h.files_on_targets()
    h.apply()
    assert h.m.last_apply_ok, "no generation recorded, no entity present"
    assert h.files_on_targets() == files, "no file changed"
    holds(
        h,
        "bound_keys_everywhere_after_apply",
        "bound_keys_on_a_shared_location_after_apply",
        "foreign_files_untouched",
        "no_key_lost",
    )
    h.recover()
    assert not h.m.state_in_doubt
    h.apply()  # refused: commune-a is bound (sound_history_applies checks the words)
    assert not h.m.last_apply_ok
    holds(h, "no_key_lost")
    missing = [t for _, t in h.bound_keys_missing()]
    assert missing == ["share-2"], "the bound key stays where it was (share-2 is new)"
    h.set_entity_present(data=Choose("commune-a"), **NO)
    h.set_entity_present(data=Choose("syndicat-b"), then_apply=True)
    assert h.m.last_apply_ok
    h.clock_moves_to_renewal_or_expiry(data=Choose("commune-a"), past_expiry=False, then_apply=True)
    assert h.m.last_apply_ok
    holds(h, "bound_keys_everywhere_after_apply", "bound_keys_on_a_shared_location_after_apply")
    (c,) = h.m.consultations.values()
    assert h.keys_in(h.target_dir("share-2"), h.m.passwords_ever).get(c.key_sha256 or "")
