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
