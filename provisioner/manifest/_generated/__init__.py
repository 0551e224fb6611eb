"""GENERATED CODE: do not edit, do not review by hand.

The compiled validators of schemas/manifest.schema.json and schemas/consultations.schema.json,
written by `python -m provisioner.manifest.compile_schemas` (fastjsonschema's output, with the
SHA-256 of the schema it came from and the generator's version). `manifest/schema.py` uses a
module only while its DIGEST matches the shipped schema, and compiles in memory otherwise;
tests/test_manifest.py fails when one is stale or was made by another major version of the
generator."""
