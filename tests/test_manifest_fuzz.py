"""Property-based: random and mutated manifests never crash or hang `validate`."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.errors import ManifestError
from provisioner.manifest.loader import read_manifest
from tests.conftest import EXAMPLES, run_cli

QUICKSTART = (EXAMPLES / "quickstart.yaml").read_bytes()
YAML_BITS = [
    b":",
    b"- ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"&a",
    b"*a",
    b"!!str",
    b"\n",
    b"  ",
    b"'",
    b'"',
    b"#",
    b"..",
    b"/",
    b"\x00",
    b"\xff",
    b"\t",
    b"null",
    b"-1",
    b"3.5",
    b"<<: ",
]


def _check(tmp: Path, data: bytes) -> None:
    path = tmp / "m.yaml"
    path.write_bytes(data)
    try:
        read_manifest(path)
    except ManifestError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:
            assert d.message and d.location.file


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(QUICKSTART)),
            st.integers(0, 12),
            st.sampled_from(YAML_BITS) | st.binary(max_size=8),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_quickstart_never_crashes(
    tmp_path: Path, edits: list[tuple[int, int, bytes]]
) -> None:
    data = bytearray(QUICKSTART)
    for at, cut, insert in edits:
        at = min(at, len(data))
        data[at : at + cut] = insert
    _check(tmp_path, bytes(data))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "version",
                        "escrow",
                        "entities",
                        "id",
                        "name",
                        "key",
                        "password",
                        "env",
                        "file",
                        "inventory",
                        "path",
                    ]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=30,
    )
)
def test_random_documents_never_crash(tmp_path: Path, doc: object) -> None:
    import json

    _check(tmp_path, json.dumps(doc).encode())


def test_cli_on_garbage_exits_1_without_traceback(tmp_path: Path) -> None:
    for i, data in enumerate([b"\x00\x01\x02", b"{{{{", b"version: [1", b"- - - -", b"\xfe\xff"]):
        path = tmp_path / f"g{i}.yaml"
        path.write_bytes(data)
        done = run_cli("validate", path)
        assert done.returncode == 1, data
        assert "Traceback" not in done.stderr and "error:" in done.stderr


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-5, 5000)
        | st.sampled_from(
            ["local", "ssh", "modern", "legacy", "present", "absent", "a", "A B", "/x", "RSA"]
        ),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "version",
                        "escrow",
                        "passphrase",
                        "env",
                        "entities",
                        "id",
                        "name",
                        "key",
                        "designation",
                        "password",
                        "size",
                        "inventory",
                        "workstations",
                        "transport",
                        "path",
                        "host",
                        "user",
                        "known_hosts",
                        "groups",
                        "file",
                        "command",
                    ]
                ),
                children,
                max_size=5,
            )
        ),
        max_leaves=25,
    )
)
def test_fast_validator_agrees_with_jsonschema(doc: object) -> None:
    import jsonschema

    from provisioner.manifest.schema import is_valid, load_schema

    reference = jsonschema.Draft202012Validator(load_schema("manifest.schema.json"))
    assert is_valid(doc, "manifest.schema.json") == reference.is_valid(doc)
    for item in [doc] if isinstance(doc, dict) else []:
        wrapped = {"version": 1, "escrow": {"passphrase": {"env": "E"}}, "entities": [item]}
        assert is_valid(wrapped, "manifest.schema.json") == reference.is_valid(wrapped)
