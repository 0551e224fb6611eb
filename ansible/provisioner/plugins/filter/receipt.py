# Copyright: provisioner maintainers
# MIT License
"""The receipt a host leaves beside a copy once a store holds it (schemas/receipt.schema.json
of the tool): entries merged, the time of a first import kept, never a secret."""

from __future__ import annotations

import base64
import datetime
import json

from ansible.errors import AnsibleFilterError


def _existing(slurped):
    """The receipt already on the host (a slurp result), or None."""
    if not isinstance(slurped, dict) or not slurped.get("content"):
        return None
    try:
        return json.loads(base64.b64decode(slurped["content"]).decode("utf-8"))
    except ValueError:
        return None  # not a receipt: rewritten


def receipt(copy, slurped, entries, now=None):
    """The receipt JSON text of `copy` (an item of provisioner_copies) with `entries`
    ({user, store, private_key} dicts) merged into the one `slurped` from the host: an entry for
    the same user, store and certificate keeps its installed_at; the others are replaced."""
    if not isinstance(entries, list):
        raise AnsibleFilterError("receipt: entries must be a list")
    stamp = now or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = _existing(slurped)
    same = (
        old is not None
        and old.get("format_version") == 1
        and old.get("thumbprint_sha1") == copy["thumbprint_sha1"]
        and old.get("cert_sha256") == copy["cert_sha256"]
    )
    stores = {s["user"]: s for s in (old.get("stores", []) if same else [])}
    for entry in entries:
        before = stores.get(entry["user"])
        kept = before is not None and before.get("store") == entry["store"]
        stores[entry["user"]] = {
            "user": entry["user"],
            "store": entry["store"],
            "installed_at": before["installed_at"] if kept else stamp,
            "private_key": bool(entry["private_key"]),
        }
    document = {
        "format_version": 1,
        "entity": copy["entity"],
        "generation": copy["generation"],
        "thumbprint_sha1": copy["thumbprint_sha1"],
        "cert_sha256": copy["cert_sha256"],
        "stores": [stores[user] for user in sorted(stores)],
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


class FilterModule:
    def filters(self):
        return {"receipt": receipt}
