# Copyright: provisioner maintainers
# MIT License
"""Inventory from a provisioner manifest and its state, through `provisioner inventory --json`."""

from __future__ import annotations

DOCUMENTATION = r"""
name: provisioner
short_description: Workstations, groups and key copies of a provisioner manifest
description:
  - Runs C(provisioner inventory --json MANIFEST) (the tool is the source of truth; this plugin
    never reads its SQLite state) and turns its document (format_version 1,
    schemas/inventory.schema.json of the tool) into hosts, groups and host variables.
  - Every workstation of the manifest is a host; every group of the manifest is a group (names
    with C(-) or C(.) get C(_) instead, as Ansible group names must); hosts also join
    C(provisioner_windows), C(provisioner_nss) or C(provisioner_file) after their store.
  - "Host variables: C(provisioner_copies) (each generation the host must hold, C(state: keep),
    or that the tool retired, C(state: remove), with entity, generation, designation,
    friendly_name, thumbprint_sha1, cert_sha256, consultations, host_path, controller_path,
    receipt_path), C(provisioner_install) (store, users, windows_location, exportable,
    nss_database), C(provisioner_transport), C(provisioner_path), and for ssh workstations
    C(ansible_host), C(ansible_port), C(ansible_user), C(ansible_ssh_private_key_file) and the
    manifest's known_hosts file with strict host key checking."
  - "Group C(all) gets C(provisioner_manifest) and C(provisioner_state_dir), which the
    C(provisioner.keystore.password) lookup and the C(provisioner.keystore.agent_stores) role use."
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [provisioner.keystore.provisioner]
    type: str
  manifest:
    description: The provisioner manifest (relative to this inventory file).
    required: true
    type: str
  state_dir:
    description: The state folder (default the tool's own rule, .provisioner/ beside the
      manifest; relative to this inventory file).
    type: str
  consultations:
    description: A consultations file other than the manifest's (relative to this inventory file).
    type: str
  executable:
    description: The provisioner program (a path, or a name on PATH).
    type: str
    default: provisioner
"""

EXAMPLES = r"""
# inventory/provisioner.yml
plugin: provisioner.keystore.provisioner
manifest: /etc/provisioner/manifest.yaml
"""

import json
import os
import re
import subprocess

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin

FORMAT_VERSION = 1


def group_name(name):
    """An Ansible group name for a manifest group name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


class InventoryModule(BaseInventoryPlugin):
    NAME = "provisioner.keystore.provisioner"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("provisioner.yml", "provisioner.yaml"))

    def _document(self, path):
        base = os.path.dirname(os.path.abspath(path))

        def located(option):
            value = self.get_option(option)
            return None if value is None else os.path.join(base, os.path.expanduser(value))

        argv = [self.get_option("executable"), "inventory", "--json", located("manifest")]
        if self.get_option("state_dir"):
            argv += ["--state-dir", located("state_dir")]
        if self.get_option("consultations"):
            argv += ["--consultations", located("consultations")]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AnsibleParserError(f"{path}: cannot run {argv[0]}: {exc}") from None
        if done.returncode != 0:
            raise AnsibleParserError(
                f"{path}: {' '.join(argv[:3])} failed (exit {done.returncode}): "
                f"{done.stderr.strip()}"
            )
        try:
            document = json.loads(done.stdout)
        except ValueError as exc:
            raise AnsibleParserError(f"{path}: {argv[0]} printed no JSON: {exc}") from None
        if document.get("format_version") != FORMAT_VERSION:
            raise AnsibleParserError(
                f"{path}: inventory format_version {document.get('format_version')!r}; this "
                f"collection reads {FORMAT_VERSION}: install the collection shipped with the tool"
            )
        return document

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        document = self._document(path)
        self.inventory.set_variable("all", "provisioner_manifest", document["manifest"])
        self.inventory.set_variable("all", "provisioner_state_dir", document["state_dir"])
        for name, host in document["hosts"].items():
            self.inventory.add_host(name)
            store_group = self.inventory.add_group("provisioner_" + host["install"]["store"])
            self.inventory.add_host(name, group=store_group)
            variables = {
                "provisioner_transport": host["transport"],
                "provisioner_path": host["path"],
                "provisioner_install": host["install"],
                "provisioner_copies": host["copies"],
            }
            connection = host["connection"]
            if connection:
                variables.update(
                    ansible_host=connection["host"],
                    ansible_port=connection["port"],
                    ansible_user=connection["user"],
                    ansible_timeout=int(max(1, round(connection.get("connect_timeout", 10)))),
                )
                if connection.get("key_file"):
                    variables["ansible_ssh_private_key_file"] = connection["key_file"]
                if connection.get("known_hosts"):
                    variables["ansible_ssh_common_args"] = (
                        f"-o UserKnownHostsFile={connection['known_hosts']} "
                        "-o StrictHostKeyChecking=yes"
                    )
                if host["install"]["store"] == "windows":
                    variables["ansible_shell_type"] = "powershell"
            for key, value in variables.items():
                self.inventory.set_variable(name, key, value)
        for group, members in document["groups"].items():
            added = self.inventory.add_group(group_name(group))
            for member in members:
                self.inventory.add_host(member, group=added)
