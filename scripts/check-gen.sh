#!/usr/bin/env bash
# Fails when gen/ is not exactly what `npm run generate` makes from proto/: the
# server's code and the OpenAPI document of the REST routes (buf.gen.yaml), with
# the document's TypeScript types (openapi-typescript).
set -euo pipefail
cd "$(dirname "$0")/.."
npm run -s generate
if ! git diff --quiet -- gen || [ -n "$(git status --porcelain -- gen)" ]; then
  echo "gen/ is out of date with proto/: run 'npm run generate' and commit the result" >&2
  git status --short -- gen >&2
  exit 1
fi
echo "gen/ is up to date"
