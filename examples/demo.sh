#!/usr/bin/env bash
# `make demo`: copy the quickstart manifest into a throwaway folder, validate it, show the
# plan, apply it, show that a second plan has nothing to do, then the status.
set -euo pipefail
provisioner="$1"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/provisioner-demo.XXXXXX")"
cp "$here/quickstart.yaml" "$work/"
cp -r "$here/secrets" "$work/"
cd "$work"
# Bold command lines only on a terminal, and not under NO_COLOR: `make demo > demo.log` is text.
bold='' plain=''
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; fi
step() { printf '\n%s$ provisioner %s%s\n' "$bold" "$*" "$plain"; "$provisioner" "$@"; }
step validate quickstart.yaml
step plan quickstart.yaml
step apply --auto-approve quickstart.yaml
step plan quickstart.yaml
step status quickstart.yaml
step rehearse quickstart.yaml
printf '\nThe copies (PKCS#12, mode 0600) the agents would import:\n'
find "$work/demo-out" -name '*.p12' | sort | sed "s|$work/||"
printf '\nDemo folder (delete it when done): %s\n' "$work"
