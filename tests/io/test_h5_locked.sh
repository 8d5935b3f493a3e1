#!/usr/bin/env bash
# An HDF5 file that another process holds open for writing (HDF5's file lock) is named as locked,
# with the wait and the HDF5_USE_FILE_LOCKING fix, where alice had called it "truncated or
# damaged; use another copy" (and HDF5's own "unable to lock file" stack is no longer printed).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
"$PYTHON" -c "import h5py" 2>/dev/null || { echo "skip: no h5py for $PYTHON"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$PYTHON" - "$T" <<'PY' &
import h5py, os, sys, time
t = sys.argv[1]
with h5py.File(os.path.join(t, "held.h5"), "w") as f:   # held open for writing: locked
    f["x"] = [1]
    f.flush()
    open(os.path.join(t, "ready"), "w").close()
    for _ in range(300):
        if os.path.exists(os.path.join(t, "done")):
            break
        time.sleep(0.05)
PY
writer=$!
for _ in $(seq 200); do [ -e "$T/ready" ] && break; sleep 0.05; done
[ -e "$T/ready" ] || fail "the writer did not start"
rc=0
"$ALICE" info "$T/held.h5" > "$T/info.log" 2>&1 || rc=$?
touch "$T/done"
wait "$writer"
[ "$rc" = 2 ] && grep -q "held.h5: another process holds it locked for writing.*HDF5_USE_FILE_LOCKING=FALSE" "$T/info.log" ||
  { cat "$T/info.log"; fail "a locked file: status $rc, not named as locked"; }
! grep -q "HDF5-DIAG" "$T/info.log" || { cat "$T/info.log"; fail "HDF5's error stack printed"; }
echo "ok: a file held open for writing is named as locked: $(grep -m1 error "$T/info.log" | cut -c1-110)"
