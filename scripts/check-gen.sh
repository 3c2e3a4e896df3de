#!/usr/bin/env bash
# Fails when the generated code is not exactly what `npm run generate` makes from
# proto/: gen/ (the server's code and the OpenAPI document, buf.gen.yaml, with the
# document's TypeScript types from openapi-typescript) and clients/ts/src/gen/
# (the TypeScript client's, buf.gen.client.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
npm run -s generate
generated=(gen clients/ts/src/gen)
if ! git diff --quiet -- "${generated[@]}" || [ -n "$(git status --porcelain -- "${generated[@]}")" ]; then
  echo "generated code is out of date with proto/: run 'npm run generate' and commit the result" >&2
  git status --short -- "${generated[@]}" >&2
  exit 1
fi
echo "gen/ and clients/ts/src/gen/ are up to date"
