#!/usr/bin/env bash
# docs/CONFIG.md is generated from the key registry: it must match `alice config --doc`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
diff <("${ALICE:-$ROOT/bin/alice}" config --doc) "$ROOT/docs/CONFIG.md" \
  || { echo "docs/CONFIG.md is stale: run 'bin/alice config --doc > docs/CONFIG.md'"; exit 1; }
