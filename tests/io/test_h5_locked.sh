#!/usr/bin/env bash
# An HDF5 file that another process holds open for writing (HDF5's file lock) is named as locked,
# with the wait and the HDF5_USE_FILE_LOCKING fix, where alice had called it "truncated or
# damaged; use another copy" (and HDF5's own "unable to lock file" stack is no longer printed).
# A checkpoint held so at a resume stops it the same way, where it had been set aside as damaged.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
"$PYTHON" -c "import h5py" 2>/dev/null || { echo "skip: no h5py for $PYTHON"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
# hold_open FILE MODE: a process holding FILE open in h5py mode MODE ("w": created, "r+"),
# so HDF5's write lock is on it, until release; returns once the lock is held
hold_open() {
  rm -f "$T/ready" "$T/done"
  "$PYTHON" - "$1" "$2" "$T" <<'PY' &
import h5py, os, sys, time
path, mode, t = sys.argv[1:4]
with h5py.File(path, mode) as f:
    if mode == "w":
        f["x"] = [1]
        f.flush()
    open(os.path.join(t, "ready"), "w").close()
    for _ in range(600):
        if os.path.exists(os.path.join(t, "done")):
            break
        time.sleep(0.05)
PY
  writer=$!
  for _ in $(seq 200); do [ -e "$T/ready" ] && break; sleep 0.05; done
  [ -e "$T/ready" ] || fail "the writer did not start"
}
release() { touch "$T/done"; wait "$writer"; }
hold_open "$T/held.h5" w
rc=0
"$ALICE" info "$T/held.h5" > "$T/info.log" 2>&1 || rc=$?
release
[ "$rc" = 2 ] && grep -q "held.h5: another process holds it locked for writing.*HDF5_USE_FILE_LOCKING=FALSE" "$T/info.log" ||
  { cat "$T/info.log"; fail "a locked file: status $rc, not named as locked"; }
! grep -q "HDF5-DIAG" "$T/info.log" || { cat "$T/info.log"; fail "HDF5's error stack printed"; }
echo "ok: a file held open for writing is named as locked: $(grep -m1 error "$T/info.log" | cut -c1-110)"

# A checkpoint held open for writing when a run resumes: named as locked, never taken for a
# damaged one (which a resume skips and sets aside as .damaged, going back to an older one)
MICRO=$ROOT/tests/train/micro.cfg
"$ALICE" pretrain --config "$MICRO" run_dir="$T/run" steps=2 ckpt_every=1 > "$T/pt.log" 2>&1 ||
  { tail -3 "$T/pt.log"; fail "the micro pre-training"; }
[ -f "$T/run/ckpt_2.h5" ] || fail "no ckpt_2.h5"
hold_open "$T/run/ckpt_2.h5" r+
rc=0
"$ALICE" pretrain --config "$MICRO" run_dir="$T/run" steps=3 ckpt_every=1 > "$T/resume.log" 2>&1 || rc=$?
release
[ "$rc" = 2 ] && grep -q "ckpt_2.h5: another process holds it locked for writing" "$T/resume.log" ||
  { tail -5 "$T/resume.log"; fail "a locked checkpoint at resume: status $rc, not named as locked"; }
[ -f "$T/run/ckpt_2.h5" ] && [ ! -e "$T/run/ckpt_2.h5.damaged" ] ||
  fail "the locked checkpoint was set aside: $(ls "$T/run")"
echo "ok: a locked checkpoint stops the resume as locked, not set aside as damaged"
