#!/usr/bin/env bash
# Fails when gen/ is not exactly what `buf generate` makes from proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
buf generate
if ! git diff --quiet -- gen || [ -n "$(git status --porcelain -- gen)" ]; then
  echo "gen/ is out of date with proto/: run 'npm run generate' and commit the result" >&2
  git status --short -- gen >&2
  exit 1
fi
echo "gen/ is up to date"
