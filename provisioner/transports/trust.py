"""`provisioner trust`: the host-key policy. Unknown keys are recorded after the operator
confirms them (or gives their fingerprint); a key that differs from the recorded one is never
replaced here, whatever the options."""

from __future__ import annotations

from collections.abc import Callable

from provisioner.errors import ProvisionerError, UsageError
from provisioner.manifest.model import Manifest, SshSpec, Target
from provisioner.manifest.transport_kinds import kind_of

Say = Callable[[str, bool], None]  # (line, is an error: stderr)
Confirm = Callable[[str], bool]  # the question; None when there is no terminal to ask on


def chosen_targets(manifest: Manifest, names: list[str] | None) -> list[Target]:
    """The targets named (default: every SSH target); unknown names are refused."""
    everything = {**manifest.workstations, **manifest.locations}
    unknown = [name for name in names or [] if name not in everything]
    if unknown:
        raise UsageError(f"unknown target(s): {', '.join(unknown)}")
    if names:
        return [everything[name] for name in names]
    return [t for t in everything.values() if kind_of(t).pins_host_keys]


def trust(
    targets: list[Target],
    *,
    fingerprint: str | None,
    yes: bool,
    say: Say,
    confirm: Confirm | None,
) -> int:
    """Record the host key of each SSH target in its known_hosts file; returns how many
    could not be recorded (scan failed, key changed, fingerprint differs, not confirmed)."""
    from provisioner.transports import ssh

    problems = 0
    seen: set[tuple[str, int, str]] = set()
    for target in targets:
        if not kind_of(target).pins_host_keys:
            raise UsageError(f"{target.name} is not an SSH target")
        spec = target.spec_of(SshSpec)
        known_hosts = spec.known_hosts
        assert known_hosts is not None  # the manifest requires it
        ident = (spec.host, spec.port, str(known_hosts))
        if ident in seen:
            continue
        seen.add(ident)
        where = ssh.known_hosts_name(spec.host, spec.port)
        try:
            key = ssh.scan_host_key(spec.host, spec.port, spec.connect_timeout)
        except ProvisionerError as exc:
            say(f"{target.name}: {exc}", True)
            problems += 1
            continue
        offered = ssh.fingerprint(key)
        recorded = ssh.known_key(known_hosts, spec.host, spec.port)
        if any(
            k.get_name() == key.get_name() and k.get_base64() == key.get_base64() for k in recorded
        ):
            say(f"{target.name}: {where} already trusted ({offered})", False)
            continue
        if recorded:
            say(
                f"{target.name}: {where} offers {offered} but {known_hosts} "
                f"records {', '.join(ssh.fingerprint(k) for k in recorded)}: NOT "
                "replaced. Verify the change, remove the old line, run trust again.",
                True,
            )
            problems += 1
            continue
        if fingerprint is not None:
            if not ssh.same_fingerprint(key, fingerprint):
                say(
                    f"{target.name}: {where} offers {offered}, not {fingerprint}: refused"
                    + (
                        ""
                        if ssh.looks_like_fingerprint(fingerprint)
                        else " (give the SHA-256 form `ssh-keygen -lf` prints, SHA256:<43 "
                        "base64 characters>)"
                    ),
                    True,
                )
                problems += 1
                continue
        elif not yes:
            if confirm is None:
                say(
                    f"{target.name}: {where} offers {offered}; give --fingerprint or "
                    "--yes to record it",
                    True,
                )
                problems += 1
                continue
            if not confirm(f"{target.name}: {where} offers {offered}. Trust it?"):
                problems += 1
                continue
        ssh.record_host_key(known_hosts, spec.host, spec.port, key)
        say(f"{target.name}: recorded {where} {offered} in {known_hosts}", False)
    return problems
