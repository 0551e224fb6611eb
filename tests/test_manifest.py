"""The manifest language: every example validates, every broken one fails at the right place."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from provisioner.errors import ManifestError
from provisioner.manifest.loader import read_manifest
from tests.conftest import EXAMPLES, REPO, Runner

BROKEN = sorted((EXAMPLES / "broken").glob("*.yaml"))


def test_examples_validate(cli: Runner) -> None:
    done = cli("validate", EXAMPLES / "quickstart.yaml")
    assert done.returncode == 0, done.stderr
    assert "valid (" in done.stdout


def test_region_validates_once_its_referenced_files_exist(cli: Runner, tmp_path: Path) -> None:
    """region.yaml names an SSH key and a `vault` program that a machine running it has;
    validate checks they are there (metadata only), and is content once they are."""
    for name in ("region.yaml", "region-consultations.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path)
    for name in ("region-ca", "secrets"):
        shutil.copytree(EXAMPLES / name, tmp_path / name)
    bare = {"PATH": "/usr/bin:/bin"}
    done = cli("validate", tmp_path / "region.yaml", env=bare)
    assert done.returncode == 1
    key = tmp_path / "ssh" / "provisioner_ed25519"
    assert (
        f"region.yaml:36:7: error: location nas-secours (and 3 other targets) key_file: "
        f"file not found: {key}" in done.stderr
    )
    assert "entity commune-a password: program 'vault' not found on PATH" in done.stderr
    key.parent.mkdir()
    key.write_text("not read by validate\n")
    key.chmod(0o600)
    (tmp_path / "bin").mkdir()
    vault = tmp_path / "bin" / "vault"
    vault.write_text("#!/bin/sh\nexit 1\n")
    done = cli("validate", tmp_path / "region.yaml", env={"PATH": f"{tmp_path}/bin:/usr/bin:/bin"})
    assert done.returncode == 1
    assert f"entity commune-a password: {vault} is not executable" not in done.stderr
    assert "program 'vault' not found on PATH" in done.stderr  # not executable: not a program
    vault.chmod(0o755)
    done = cli("validate", tmp_path / "region.yaml", env={"PATH": f"{tmp_path}/bin:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "valid (" in done.stdout
    # The known_hosts file does not exist yet: `trust` makes it; said once, not per target.
    assert done.stderr.count("known_hosts: file not found") == 1
    assert "(and 4 other targets) known_hosts" in done.stderr


def test_region_model_resolves_groups_and_issuer() -> None:
    manifest, _ = read_manifest(EXAMPLES / "region.yaml")
    departement = manifest.entity("departement")
    assert departement is not None
    assert [t.name for t in departement.workstations] == [
        "cd-marches-01",
        "cd-marches-02",
        "cd-juridique-01",
    ]
    assert departement.key.issuer == "region-ca"
    assert departement.key.designation_for(1, 2026) == "CD Exemple 2026"
    sivom = manifest.entity("sivom")
    assert sivom is not None and sivom.state == "absent"


def test_broken_examples_cover_every_error_kind() -> None:
    names = {p.stem for p in BROKEN}
    assert {
        "yaml-syntax",
        "duplicate-key",
        "wrong-type",
        "unknown-key",
        "dangling-workstation",
        "unsafe-path",
        "inline-secret",
        "unknown-issuer",
        "missing-key",
    } <= names


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_example_reports_place_and_reason(cli: Runner, path: Path, tmp_path: Path) -> None:
    expect = re.match(r"# expect: (\d+):(\d+): (.*)", path.read_text().splitlines()[0])
    assert expect, f"{path} lacks its '# expect: LINE:COL: message' header"
    line, col, message = expect.groups()
    done = cli("validate", path, cwd=tmp_path)
    assert done.returncode == 1
    assert f"{path}:{line}:{col}: error: {message}" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == [], "validate must write nothing"


def test_validate_reports_every_error_not_only_the_first(tmp_path: Path, cli: Runner) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text(
        "version: 1\nescrow: {passphrase: {env: E}}\nentities:\n"
        "  - {id: a, name: A, key: {designation: A, size: 1}, password: {env: P}}\n"
        "  - {id: b, name: B, key: {designation: B}, password: inline-secret-123}\n"
    )
    done = cli("validate", bad)
    assert done.returncode == 1
    assert "m.yaml:4:50: error: entities[0].key.size" in done.stderr
    assert "m.yaml:5:55: error: entities[1].password: inline secrets" in done.stderr
    assert "inline-secret-123" not in done.stderr + done.stdout
    assert "invalid (2 errors)" in done.stderr


def test_json_output_lists_errors_with_positions(cli: Runner) -> None:
    done = cli("validate", "--json", EXAMPLES / "broken" / "unknown-key.yaml")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["valid"] is False
    assert {"line": 14, "column": 5}.items() <= next(
        e for e in result["errors"] if "pasword" in e["message"]
    ).items()


def test_designation_differing_from_common_name_is_a_warning(tmp_path: Path, cli: Runner) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(
        "version: 1\nescrow: {passphrase: {env: E}}\n"
        "inventory: {locations: [{name: nas, transport: local, path: nas}]}\n"
        "entities:\n  - id: a\n    name: A\n    key: {designation: Ville A, common_name: VILLE-A}\n"
        "    password: {env: P}\n    shared_locations: [nas]\n"
    )
    done = cli("validate", m)
    assert done.returncode == 0
    assert (
        "m.yaml:7:46: warning: entities[0].key.common_name: common_name 'VILLE-A' differs"
        in done.stderr
    )


def test_an_unknown_placeholder_in_a_designation_is_refused(tmp_path: Path, cli: Runner) -> None:
    """Red team 4, L3: `Ville {annee}` was kept as literal text on the platform's key name."""
    m = tmp_path / "m.yaml"
    m.write_text(
        "version: 1\nescrow: {passphrase: {env: E}}\n"
        "inventory: {locations: [{name: nas, transport: local, path: nas}]}\n"
        "entities:\n  - id: a\n    name: A\n    key: {designation: 'Ville {annee} {n}'}\n"
        "    password: {env: P}\n    shared_locations: [nas]\n"
    )
    done = cli("validate", m)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "m.yaml:7:24: error: entities[0].key.designation: unknown placeholder {annee} in "
        "designation: only {n}" in done.stderr
    )


def test_non_utf8_is_refused_with_its_position(tmp_path: Path, cli: Runner) -> None:
    m = tmp_path / "m.yaml"
    m.write_bytes(b"version: 1\nescrow: {passphrase: {env: E}}\nentities: []\n# caf\xe9\n")
    done = cli("validate", m)
    assert done.returncode == 1
    assert "m.yaml:4:6: error: file is not valid UTF-8 text" in done.stderr


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    m = tmp_path / "bomb.yaml"
    m.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match="alias bomb"):
        read_manifest(m)


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    m = tmp_path / "deep.yaml"
    m.write_text("version: 1\nx: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(ManifestError, match="nesting deeper"):
        read_manifest(m)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    m = tmp_path / "big.yaml"
    m.write_bytes(b"# " + b"x" * (17 * 1024 * 1024) + b"\n")
    with pytest.raises(ManifestError, match="larger than"):
        read_manifest(m)


def test_missing_manifest_is_a_clear_error(tmp_path: Path, cli: Runner) -> None:
    done = cli("validate", tmp_path / "nope.yaml")
    assert done.returncode == 1
    assert "nope.yaml: error: cannot read: No such file or directory" in done.stderr


def test_generations_get_unique_designations() -> None:
    manifest, _ = read_manifest(EXAMPLES / "quickstart.yaml")
    commune, syndicat = manifest.entities
    assert commune.key.designation_for(1, 2026) == "Commune Exemple"
    assert commune.key.designation_for(2, 2028) == "Commune Exemple (2)"
    assert syndicat.key.designation_for(2, 2028) == "Syndicat Eaux Val 2028"


def test_version_and_help(cli: Runner) -> None:
    assert cli("--version").stdout.startswith("provisioner ")
    done = cli("validate", "--help")
    assert done.returncode == 0 and "MANIFEST" in done.stdout


def test_compiled_validators_are_those_of_the_shipped_schemas() -> None:
    """The generated validator modules were regenerated after the last schema change (a stale
    one would be skipped for a slow in-memory compilation, silently)."""
    import importlib

    import fastjsonschema

    from provisioner.manifest.compile_schemas import COMPILED
    from provisioner.manifest.schema import compiled_module, schema_digest

    for name in COMPILED:
        module = importlib.import_module(f"provisioner.manifest.{compiled_module(name)}")
        where = f"provisioner/manifest/{compiled_module(name).replace('.', '/')}.py"
        regenerate = "python -m provisioner.manifest.compile_schemas"
        assert schema_digest(name) == module.DIGEST, f"{where} is stale: {regenerate}"
        # Made by the generator this project installs (same major version: its code's
        # behaviour), and marked generated.
        generator, version = module.GENERATOR.split()
        assert generator == "fastjsonschema", where
        assert version.split(".")[0] == fastjsonschema.VERSION.split(".")[0], (
            f"{where} was generated by {module.GENERATOR}: {regenerate}"
        )
        assert "do not edit" in (REPO / where).read_text().splitlines()[1]


def test_the_shipped_manifest_schema_says_what_the_transport_kinds_declare() -> None:
    """The target of schemas/manifest.schema.json is assembled from the transport kinds (each
    transport's fields, words and required ones live with its kind): a kind edited without
    `python -m provisioner.manifest.compile_schemas` fails here, naming the command."""
    from provisioner.manifest.compile_schemas import assembled_manifest_schema
    from provisioner.manifest.schema import load_schema
    from provisioner.manifest.transport_kinds import KINDS

    shipped = load_schema("manifest.schema.json")
    assert shipped == assembled_manifest_schema(), (
        "schemas/manifest.schema.json is stale: python -m provisioner.manifest.compile_schemas"
    )
    target = shipped["$defs"]["target"]
    assert target["properties"]["transport"]["enum"] == list(KINDS)
    for kind in KINDS.values():
        for field in kind.fields:
            assert kind.name in target["properties"][field]["description"], (kind.name, field)


def test_two_targets_in_one_folder_are_refused_naming_both(tmp_path: Path, cli: Runner) -> None:
    """A removal on one target would delete the other's copy (red team 3, defect 3)."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "alias").symlink_to("..")  # out/alias/out is out
    m = tmp_path / "m.yaml"
    m.write_text(
        "version: 1\nescrow: {passphrase: {env: E}}\ninventory:\n"
        "  locations:\n"
        "    - {name: nas, transport: local, path: out/shared}\n"
        "    - {name: smb1, transport: smb, host: Files, share: Keys, user: u,"
        " password: {env: S}, path: /Bicle}\n"
        "  workstations:\n"
        "    - {name: ws1, transport: local, path: out/ws}\n"
        "    - {name: ws2, transport: local, path: ./out/ws}\n"
        "    - {name: ws3, transport: local, path: out//ws/}\n"
        f"    - {{name: ws4, transport: local, path: {tmp_path}/out/ws}}\n"
        "    - {name: ws5, transport: local, path: out/alias/out/ws}\n"
        "    - {name: ws6, transport: local, path: out/shared}\n"
        "    - {name: ws7, transport: local, path: out/ws-other}\n"
        "    - {name: pc1, transport: ssh, host: pc.example, user: u, known_hosts: kh,"
        " path: C:/Keys}\n"
        "    - {name: pc2, transport: ssh, host: PC.example, user: v, known_hosts: kh,"
        " path: c:/keys/}\n"
        "    - {name: pc3, transport: ssh, host: pc.example, port: 2222, user: u,"
        " known_hosts: kh, path: C:/Keys}\n"
        "    - {name: smb2, transport: smb, host: files, share: keys, user: u,"
        " password: {env: S}, path: /bicle/}\n"
        "entities:\n"
        "  - {id: a, name: A, key: {designation: A}, password: {env: P},"
        " shared_locations: [nas], workstations: [ws1, ws7]}\n"
    )
    done = cli("validate", m)
    assert done.returncode == 1, done.stdout + done.stderr
    first = f"({m}:8:7)"  # ws1's entry
    for line, name in ((9, "ws2"), (10, "ws3"), (11, "ws4"), (12, "ws5")):
        assert (
            f"m.yaml:{line}:" in done.stderr
            and f"workstation '{name}' is in the folder of workstation 'ws1' {first}" in done.stderr
        ), done.stderr
    assert f"workstation 'ws6' is in the folder of location 'nas' ({m}:5:7)" in done.stderr
    assert "workstation 'pc2' is in the folder of workstation 'pc1'" in done.stderr
    assert f"workstation 'smb2' is in the folder of location 'smb1' ({m}:6:7)" in done.stderr
    assert "'ws7' is in" not in done.stderr and "'pc3' is in" not in done.stderr
    assert "invalid (7 errors)" in done.stderr
    # Every command loads the manifest the same way: nothing is written.
    assert cli("plan", m, env={"E": "x" * 20, "P": "y" * 20, "S": "z"}).returncode == 1
    assert not (tmp_path / ".provisioner").exists() and not (tmp_path / "out" / "ws").exists()
