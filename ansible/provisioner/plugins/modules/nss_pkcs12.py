#!/usr/bin/python
# Copyright: provisioner maintainers
# MIT License
"""A PKCS#12 bi-clé in an NSS database (Firefox, Chromium), through pk12util and certutil."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nss_pkcs12
short_description: Import a PKCS#12 into an NSS database, or remove it, checked by thumbprint
description:
  - Imports a PKCS#12 file into an NSS database with C(pk12util), the password given in a file
    of mode 0600 in a private temporary folder (removed at once), never on a command line; then
    checks with C(certutil) that the database holds the certificate of the expected SHA-1
    thumbprint under the nickname, with its private key.
  - Idempotent by comparison - nothing is done when the database already holds that
    certificate and its key; C(state=absent) removes the certificate and its key only when the
    certificate under the nickname has the given thumbprint.
  - Creates the database (empty password, as the browsers do) when C(database) holds none.
options:
  database:
    description: The NSS database folder (without C(sql:)).
    type: path
    required: true
  nickname:
    description: The certificate's nickname (the PKCS#12 friendly name).
    type: str
    required: true
  thumbprint_sha1:
    description: SHA-1 of the certificate, hex (colons allowed).
    type: str
    required: true
  path:
    description: The PKCS#12 file on the host, readable by the user the module runs as
      (state=present; or give O(content)).
    type: path
  content:
    description: The PKCS#12 itself, base64 (a slurp result's C(content)), for a module run
      as an agent who may not read the copy's folder; written to a private temporary folder
      of that user, removed at once.
    type: str
  password:
    description: "Its password (state=present). Use the task with C(no_log: true)."
    type: str
  database_password:
    description: >-
      The database's own password (Firefox's Primary Password), when it has one; written to a
      file of mode 0600 in a private temporary folder for C(pk12util -k) and C(certutil -f),
      removed at once. Without it, a database that has one is refused naming it.
    type: str
  prove:
    description: >-
      After the key is there (state=present), encrypt a test bid to the certificate under the
      nickname and open it with the key in the database (C(cmsutil -E) then C(cmsutil -D)), as
      the platform's client would on opening day; a bid that does not open fails the task.
    type: bool
    default: true
  state:
    description: present or absent.
    type: str
    choices: [present, absent]
    default: present
author:
  - provisioner maintainers
"""

EXAMPLES = r"""
- name: Import the current bi-clé
  provisioner.keystore.nss_pkcs12:
    database: /home/agent/.pki/nssdb
    nickname: Commune Exemple
    thumbprint_sha1: 0F3A0ADEFC3C91728620934210E8D87E5BB0B74B
    path: /srv/provisioner/commune-exemple.g1.p12
    password: "{{ lookup('provisioner.keystore.password', 'commune-exemple', manifest=provisioner_manifest) }}"
  no_log: true
"""

RETURN = r"""
thumbprint_sha1:
  description: SHA-1 of the certificate the database holds under the nickname (upper-case hex), if any.
  type: str
  returned: always
private_key:
  description: Whether the database holds the private key of that certificate.
  type: bool
  returned: always
store:
  description: C(nss:DATABASE), as receipts name it.
  type: str
  returned: always
opened:
  description: Whether a test bid encrypted to the certificate opened with the key in the database (state=present, prove=true).
  type: bool
  returned: state=present
outcome:
  description: >-
    What this run observed and did (state=present), for the receipt - C(present) (the database
    already held the certificate and its private key), C(imported) (it did not; imported now),
    C(import-failed) or C(unreadable) (the database could not be read), the last two with a
    failure whose C(msg) names the database and the nickname, never a secret.
  type: str
  returned: state=present
"""

import base64
import os
import re
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

_HEX = re.compile(r"^([0-9A-F]{2}:)*[0-9A-F]{2}$")


TOKEN = {"file": None}  # the database password's file, while the module runs


def _token_args(flag):
    return [flag, TOKEN["file"]] if TOKEN["file"] else []


def _locked(module, database, err):
    """Fail clearly when the database asks for a password this run was not given."""
    text = err or ""
    if "could not authenticate" in text or "Failed to authenticate" in text:
        given = "the one given is wrong" if TOKEN["file"] else "none was given"
        module.fail_json(
            msg=f"{database}: the NSS database has a password (Firefox: Primary Password) and "
            f"{given}: set agent_stores_nss_passwords for this user (Ansible Vault), or remove "
            "the primary password",
            outcome="import-failed",
        )


def _normal(thumbprint):
    return thumbprint.replace(":", "").strip().upper()


def _tool(module, name):
    found = shutil.which(name) or module.get_bin_path(name)
    if not found:
        module.fail_json(msg=f"{name} is not installed (Debian/Ubuntu: libnss3-tools; RHEL: nss-tools)")
    return found


def probe(module, database, nickname):
    """(SHA-1 thumbprints under `nickname`, whether a private key has that nickname)."""
    certutil = _tool(module, "certutil")
    rc, out, _ = module.run_command([certutil, "-L", "-d", f"sql:{database}", "-n", nickname])
    thumbprints = set()
    if rc == 0:
        lines = out.splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("Fingerprint (SHA1):") and i + 1 < len(lines):
                value = lines[i + 1].strip().upper()
                if _HEX.match(value):
                    thumbprints.add(_normal(value))
    rc, out, err = module.run_command(
        [certutil, "-K", "-d", f"sql:{database}", *_token_args("-f")], data=""
    )
    if rc != 0:
        _locked(module, database, err)
    has_key = False
    if rc == 0:
        for line in out.splitlines():
            # "<  0> rsa      <key id>   NICKNAME" (or "NSS Certificate DB:NICKNAME")
            match = re.match(r"^<\s*\d+>\s+\S+\s+[0-9a-fA-F]+\s+(.*)$", line)
            name = match.group(1).strip() if match else None
            if name in (nickname, f"NSS Certificate DB:{nickname}"):
                has_key = True
    return thumbprints, has_key


def nicknames_holding(module, database, thumbprint, nickname):
    """The nicknames under which the database holds the certificate `thumbprint`: the given
    one first, then any other (the generation may have been imported under a former name)."""
    certutil = _tool(module, "certutil")
    rc, out, _ = module.run_command([certutil, "-L", "-d", f"sql:{database}"])
    names = [nickname]
    if rc == 0:
        for line in out.splitlines():
            match = re.match(r"^(.*?)\s+([A-Za-z]*,[A-Za-z]*,[A-Za-z]*)$", line)
            if match and match.group(1).strip() and match.group(1).strip() not in names:
                names.append(match.group(1).strip())
    return [n for n in names if thumbprint in probe(module, database, n)[0]]


def ensure_database(module, database):
    if os.path.exists(os.path.join(database, "cert9.db")):
        return False
    if module.check_mode:
        return True
    os.makedirs(database, mode=0o700, exist_ok=True)
    certutil = _tool(module, "certutil")
    rc, _, err = module.run_command(
        [certutil, "-N", "-d", f"sql:{database}", "--empty-password"]
    )
    if rc != 0:
        module.fail_json(msg=f"certutil -N {database}: {err.strip()}")
    return True


def import_pkcs12(module, database, path, content, password):
    pk12util = _tool(module, "pk12util")
    folder = tempfile.mkdtemp(prefix="provisioner-nss-")  # 0700
    try:
        if content is not None:
            path = os.path.join(folder, "bundle.p12")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
        secret = os.path.join(folder, "password")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(password)
        rc, out, err = module.run_command(
            [pk12util, "-i", path, "-d", f"sql:{database}", "-w", secret, *_token_args("-k")]
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if rc != 0:
        _locked(module, database, err or out)
        # pk12util's message never holds the password (it was given in a file).
        module.fail_json(
            msg=f"pk12util could not import {path} into {database}: {(err or out).strip()}",
            outcome="import-failed",
        )


def open_test_bid(module, database, nickname):
    """Encrypt a test bid to the certificate under `nickname` and open it with the key in the
    database, as the agent: (opened, why not)."""
    cmsutil = _tool(module, "cmsutil")
    folder = tempfile.mkdtemp(prefix="provisioner-nss-")  # 0700
    try:
        plain = os.path.join(folder, "bid.txt")
        text = base64.b64encode(os.urandom(24))
        with open(plain, "wb") as handle:
            handle.write(b"provisioner test bid " + text + b"\n")
        sealed, opened = os.path.join(folder, "bid.p7m"), os.path.join(folder, "bid.out")
        rc, out, err = module.run_command(
            [cmsutil, "-E", "-d", f"sql:{database}", "-r", nickname, "-i", plain, "-o", sealed,
             *_token_args("-f")],
            data="",
        )
        if rc != 0:
            return False, f"cmsutil -E to '{nickname}': {(err or out).strip()}"
        rc, out, err = module.run_command(
            [cmsutil, "-D", "-d", f"sql:{database}", "-i", sealed, "-o", opened,
             *_token_args("-f")],
            data="",
        )
        if rc != 0:
            return False, f"cmsutil -D: {(err or out).strip()}"
        with open(opened, "rb") as got, open(plain, "rb") as want:
            if got.read() != want.read():
                return False, "cmsutil -D gave other bytes than the test bid"
        return True, ""
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def proved(module, database, nickname, wanted, changed):
    """exit_json for a key that is there, after opening a test bid with it (prove=true)."""
    store = f"nss:{database}"
    outcome = "imported" if changed else "present"
    if not module.params["prove"] or module.check_mode:
        module.exit_json(
            changed=changed, thumbprint_sha1=wanted, private_key=True, store=store,
            outcome=outcome, opened=False,
        )
    ok, why = open_test_bid(module, database, nickname)
    if not ok:
        module.fail_json(
            msg=f"{database}: '{nickname}' is there but a test bid encrypted to it does not open "
            f"with its key: {why}",
            outcome="import-failed",
        )
    module.exit_json(
        changed=changed, thumbprint_sha1=wanted, private_key=True, store=store, outcome=outcome,
        opened=True,
    )


def remove(module, database, nickname):
    certutil = _tool(module, "certutil")
    # -F removes the private key and its certificate; -D what remains of the certificate.
    module.run_command(
        [certutil, "-F", "-d", f"sql:{database}", "-n", nickname, *_token_args("-f")], data=""
    )
    module.run_command([certutil, "-D", "-d", f"sql:{database}", "-n", nickname])


def main():
    module = AnsibleModule(
        argument_spec={
            "database": {"type": "path", "required": True},
            "nickname": {"type": "str", "required": True},
            "thumbprint_sha1": {"type": "str", "required": True},
            "path": {"type": "path"},
            "content": {"type": "str", "no_log": True},
            "password": {"type": "str", "no_log": True},
            "database_password": {"type": "str", "no_log": True},
            "prove": {"type": "bool", "default": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        required_if=[("state", "present", ("password",)), ("state", "present", ("path", "content"), True)],
        mutually_exclusive=[("path", "content")],
        supports_check_mode=True,
    )
    token_folder = None
    if module.params["database_password"]:
        token_folder = tempfile.mkdtemp(prefix="provisioner-nss-")  # 0700
        TOKEN["file"] = os.path.join(token_folder, "database-password")
        fd = os.open(TOKEN["file"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(module.params["database_password"])
    try:
        run(module)
    finally:  # exit_json and fail_json leave through here too (SystemExit)
        if token_folder is not None:
            shutil.rmtree(token_folder, ignore_errors=True)


def run(module):
    database = module.params["database"]
    nickname = module.params["nickname"]
    wanted = _normal(module.params["thumbprint_sha1"])
    store = f"nss:{database}"
    if module.params["state"] == "absent":
        if not os.path.exists(os.path.join(database, "cert9.db")):
            module.exit_json(changed=False, thumbprint_sha1=None, private_key=False, store=store)
        # By thumbprint: a nickname naming another certificate is not ours to remove.
        holding = nicknames_holding(module, database, wanted, nickname)
        if not holding:
            module.exit_json(changed=False, thumbprint_sha1=None, private_key=False, store=store)
        if not module.check_mode:
            for name in holding:
                remove(module, database, name)
            if nicknames_holding(module, database, wanted, nickname):
                module.fail_json(msg=f"{wanted} is still in {database} after certutil -F/-D")
        module.exit_json(changed=True, thumbprint_sha1=None, private_key=False, store=store)

    changed = ensure_database(module, database)
    if not (changed and module.check_mode):
        rc, _, err = module.run_command([_tool(module, "certutil"), "-L", "-d", f"sql:{database}"])
        if rc != 0:
            module.fail_json(
                msg=f"{database}: the NSS database cannot be read ('{nickname}' not checked): "
                f"{err.strip()}",
                outcome="unreadable",
            )
    thumbprints, has_key = probe(module, database, nickname) if not changed else (set(), False)
    if wanted in thumbprints and has_key:
        proved(module, database, nickname, wanted, changed)
    if module.check_mode:
        module.exit_json(
            changed=True, thumbprint_sha1=None, private_key=False, store=store, outcome="imported"
        )
    path, content = module.params["path"], None
    if module.params["content"] is not None:
        try:
            content = base64.b64decode(module.params["content"], validate=True)
        except ValueError:
            module.fail_json(
                msg="content is not base64 (give a slurp result's content)", outcome="import-failed"
            )
        path = "the given content"
    elif not os.path.isfile(path):
        module.fail_json(
            msg=f"{path}: no PKCS#12 there (file present on the host?)", outcome="import-failed"
        )
    import_pkcs12(module, database, path, content, module.params["password"])
    thumbprints, has_key = probe(module, database, nickname)
    if wanted not in thumbprints:
        module.fail_json(
            msg=f"{path} imported, but {database} holds no certificate {wanted} under "
            f"'{nickname}' (found {', '.join(sorted(thumbprints)) or 'none'}): wrong file?",
            outcome="import-failed",
        )
    if not has_key:
        module.fail_json(
            msg=f"{database}: '{nickname}' was imported without its private key",
            outcome="import-failed",
        )
    proved(module, database, nickname, wanted, True)


if __name__ == "__main__":
    main()
