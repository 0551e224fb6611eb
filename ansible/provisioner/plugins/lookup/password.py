# Copyright: provisioner maintainers
# MIT License
"""The PKCS#12 password of an entity, resolved by the provisioner tool's own code."""

from __future__ import annotations

DOCUMENTATION = r"""
name: password
short_description: An entity's PKCS#12 password, from the manifest's secret reference
description:
  - Resolves the password of each entity given, as C(provisioner apply) does, from the
    manifest's secret reference ({env}, {file} or {command}) with the tool's own code (the
    C(provisioner) Python package must be importable by the controller's Python), and checks
    it against the entity's password policy. The password stays in memory; use it only in tasks
    whose no_log is true.
  - Alternative without the tool on the controller - an Ansible Vault variable, see the role's
    C(agent_stores_passwords).
options:
  _terms:
    description: Entity ids.
    required: true
  manifest:
    description: The manifest (the inventory plugin sets C(provisioner_manifest)).
    type: path
    required: true
"""

EXAMPLES = r"""
- name: Import (the password never shows)
  provisioner.keystore.nss_pkcs12:
    password: "{{ lookup('provisioner.keystore.password', 'commune-exemple', manifest=provisioner_manifest) }}"
  no_log: true
"""

RETURN = r"""
_raw:
  description: One password per entity given.
  type: list
  elements: str
"""

from pathlib import Path

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        try:
            from provisioner.errors import ProvisionerError
            from provisioner.manifest.loader import read_manifest
            from provisioner.secrets import policy_problem, resolve
        except ImportError as exc:
            raise AnsibleError(
                "provisioner.keystore.password needs the provisioner package on the controller "
                f"({exc}); or give the passwords in an Ansible Vault (agent_stores_passwords)"
            ) from None
        try:
            manifest, _ = read_manifest(Path(self.get_option("manifest")))
        except ProvisionerError as exc:
            raise AnsibleError(f"provisioner manifest: {exc}") from None
        passwords = []
        for entity_id in terms:
            entity = manifest.entity(entity_id)
            if entity is None:
                raise AnsibleError(f"{manifest.path}: no entity '{entity_id}'")
            try:
                password = resolve(entity.password, f"entity {entity_id} password")
            except ProvisionerError as exc:  # names the source, never the value
                raise AnsibleError(str(exc)) from None
            problem = policy_problem(password, entity.password_policy)
            if problem:
                raise AnsibleError(f"entity {entity_id}: the password is refused: {problem}")
            passwords.append(password)
        return passwords
