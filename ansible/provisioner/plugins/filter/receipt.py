# Copyright: provisioner maintainers
# MIT License
"""The receipt a host leaves beside a copy (schemas/receipt.schema.json of the tool): what this
run observed in each agent's store, and when. Never a secret."""

from __future__ import annotations

import base64
import datetime
import json
import os

from ansible.errors import AnsibleFilterError

FORMAT = 2
OUTCOMES = ("installed", "import-failed", "unreadable")


def _now():
    """UTC now, or PROVISIONER_NOW on the controller (the tool's clock, for rehearsals)."""
    forced = os.environ.get("PROVISIONER_NOW")
    if forced:
        try:
            when = datetime.datetime.fromisoformat(forced.replace("Z", "+00:00"))
        except ValueError:
            raise AnsibleFilterError(f"PROVISIONER_NOW={forced!r} is not an ISO 8601 date")
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
    else:
        when = datetime.datetime.now(datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _existing(slurped):
    """The receipt already on the host (a slurp result), or None."""
    if not isinstance(slurped, dict) or not slurped.get("content"):
        return None
    try:
        return json.loads(base64.b64decode(slurped["content"]).decode("utf-8"))
    except ValueError:
        return None  # not a receipt: rewritten


def _outcome(result):
    """(outcome, imported now, opened a test bid, detail) from the import task's registered
    result of one copy: the store module's `outcome` (nss_pkcs12), else from its failure."""
    if not isinstance(result, dict):
        return "import-failed", False, False, "the import task left no result"
    if isinstance(result.get("result"), dict):  # win_powershell's $Ansible.Result
        result = {**result, **result["result"]}
    outcome = result.get("outcome")
    if outcome in ("present", "imported"):
        return "installed", outcome == "imported", bool(result.get("opened")), ""
    if outcome == "unreadable":
        return "unreadable", False, False, str(result.get("msg", ""))[:500]
    return "import-failed", False, False, str(result.get("msg", "import failed"))[:500]


def entry(result, user, store, imported=None):
    """The receipt entry of one agent's store from the check (or import) task's result for one
    copy; `imported`, when given, says whether this run's import put the key there; `opened`,
    whether a test bid encrypted to the certificate opened with the key in the store."""
    outcome, imported_now, opened, detail = _outcome(result)
    imported = imported_now if imported is None else bool(imported) and outcome == "installed"
    return {
        "user": user,
        "store": store,
        "outcome": outcome,
        "imported": imported,
        "opened": opened,
        "detail": detail,
        "private_key": outcome == "installed",
    }


def receipt(copy, slurped, entries, now=None):
    """The receipt JSON text of `copy` (an item of provisioner_copies) with `entries` merged
    into the one `slurped` from the host. Each entry ({user, store, outcome, imported,
    detail, private_key}; `outcome` defaults to installed) is what this run observed: it is
    stamped `observed_at` now. `installed_at` is when the store last took the key in: now for
    an import this run made, kept from the receipt while the store kept holding it, absent
    when the import failed. Other users' entries are kept as they were observed."""
    if not isinstance(entries, list):
        raise AnsibleFilterError("receipt: entries must be a list")
    stamp = now or _now()
    old = _existing(slurped)
    same = (
        old is not None
        and old.get("format_version") in (1, FORMAT)
        and old.get("thumbprint_sha1") == copy["thumbprint_sha1"]
        and old.get("cert_sha256") == copy["cert_sha256"]
    )
    stores = {}
    for s in old.get("stores", []) if same else []:
        if isinstance(s, dict) and "user" in s:
            kept = dict(s)
            kept.setdefault("outcome", "installed")
            kept.setdefault("observed_at", kept.get("installed_at"))
            stores[s["user"]] = kept
    for e in entries:
        outcome = e.get("outcome", "installed")
        if outcome not in OUTCOMES:
            raise AnsibleFilterError(f"receipt: unknown outcome {outcome!r}")
        before = stores.get(e["user"])
        held_before = (
            before is not None
            and before.get("store") == e["store"]
            and before.get("outcome") == "installed"
            and before.get("installed_at")
        )
        document = {
            "user": e["user"],
            "store": e["store"],
            "outcome": outcome,
            "private_key": bool(e.get("private_key", outcome == "installed")),
            "observed_at": stamp,
        }
        if outcome == "installed":
            imported = bool(e.get("imported", False))
            document["installed_at"] = (
                before["installed_at"] if held_before and not imported else stamp
            )
        if outcome == "installed" and e.get("opened"):
            document["opened_at"] = stamp  # a test bid opened with the key in the store
        if e.get("detail"):
            document["detail"] = str(e["detail"])
        stores[e["user"]] = document
    document = {
        "format_version": FORMAT,
        "entity": copy["entity"],
        "generation": copy["generation"],
        "thumbprint_sha1": copy["thumbprint_sha1"],
        "cert_sha256": copy["cert_sha256"],
        "stores": [stores[user] for user in sorted(stores)],
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


class FilterModule:
    def filters(self):
        return {"receipt": receipt, "receipt_entry": entry}
