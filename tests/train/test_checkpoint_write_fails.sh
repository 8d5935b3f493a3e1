#!/usr/bin/env bash
# A checkpoint whose write fails (here: the file size limit, as a full disk or a quota would)
# ends the run with status 2 (the machine's input, not an internal error: it had been 1 with an
# HDF5 call's file and line) naming the file and the system's reason, then removes the
# half-written .tmp and says so, naming the checkpoint; the checkpoint from before is untouched
# and the run resumes from it. Before: the .tmp stayed, the message named no file, and the
# process then crashed in HDF5's exit handler (status 139).
source "$(dirname "$0")/lib.sh"
CFG=$ROOT/jobs/pretrain_tiny.cfg   # a checkpoint of ~15 MB: over the 8 MB limit below
"$ALICE" pretrain --config "$CFG" run_dir="$WORK/run" steps=2 --stop-after 1 > "$WORK/a.log" 2>&1 ||
    fail "first step: $(tail -3 "$WORK/a.log")"
before=$(md5sum < "$WORK/run/ckpt_1.h5")
set +e
(trap '' XFSZ; ulimit -f 8000; exec "$ALICE" pretrain --config "$CFG" run_dir="$WORK/run" steps=2) \
    > "$WORK/b.log" 2>&1
rc=$?
set -e
[ "$rc" = 2 ] ||
    { tail -5 "$WORK/b.log"; fail "a failed checkpoint write ended with status $rc, not 2"; }
grep -q "cannot write .* into $WORK/run/ckpt_2.h5.tmp: File too large; free space" "$WORK/b.log" ||
    { tail -5 "$WORK/b.log"; fail "the message does not name the file and the system's reason"; }
grep -q "ckpt_2.h5.tmp was being written .*removed it" "$WORK/b.log" ||
    { tail -5 "$WORK/b.log"; fail "no message naming the removed ckpt_2.h5.tmp"; }
[ ! -e "$WORK/run/ckpt_2.h5.tmp" ] || fail "ckpt_2.h5.tmp was left behind"
[ ! -e "$WORK/run/ckpt_2.h5" ] || fail "a ckpt_2.h5 appeared"
[ "$(md5sum < "$WORK/run/ckpt_1.h5")" = "$before" ] || fail "ckpt_1.h5 changed"
"$ALICE" pretrain --config "$CFG" run_dir="$WORK/run" steps=2 > "$WORK/c.log" 2>&1 ||
    fail "resume after the failed write: $(tail -3 "$WORK/c.log")"
grep -q "resumed from .*ckpt_1.h5 at step 1" "$WORK/c.log" || fail "did not resume from ckpt_1.h5"
[ -f "$WORK/run/ckpt_2.h5" ] || fail "the resumed run wrote no ckpt_2.h5"
echo "ok: failed write removed its .tmp (status 2), ckpt_1.h5 intact, resumed to ckpt_2.h5"
# The limit met elsewhere than in a tensor's H5Dwrite (HDF5 holds small datasets and metadata
# and writes them at a later call: H5Dclose, an attribute, the flush): status 2 all the same
# (it had been 1, an "internal error", at 13000 and 15000 blocks), with alice's message alone
for limit in 13000 15000; do
  rm -rf "$WORK/run$limit" && cp -r "$WORK/run" "$WORK/run$limit"
  rm -f "$WORK/run$limit/ckpt_2.h5"
  set +e
  (trap '' XFSZ; ulimit -f $limit
   exec "$ALICE" pretrain --config "$CFG" run_dir="$WORK/run$limit" steps=2) \
    > "$WORK/l$limit.log" 2>&1
  rc=$?
  set -e
  [ "$rc" = 2 ] || [ "$rc" = 0 ] ||
    { tail -5 "$WORK/l$limit.log"; fail "ulimit -f $limit: status $rc, neither 2 nor a fit"; }
  [ "$rc" = 0 ] || grep -q "File too large" "$WORK/l$limit.log" ||
    { tail -5 "$WORK/l$limit.log"; fail "ulimit -f $limit: the system's reason not named"; }
  # alice's message alone: HDF5's error stack of the later call (printed by HDF5 itself, about
  # 20 HDF5-DIAG lines) no longer comes above it
  ! grep -q "HDF5-DIAG" "$WORK/l$limit.log" ||
    { head -5 "$WORK/l$limit.log"; fail "ulimit -f $limit: HDF5's error stack printed"; }
  [ ! -e "$WORK/run$limit/ckpt_2.h5.tmp" ] || fail "ulimit -f $limit: ckpt_2.h5.tmp left behind"
done
echo "ok: the limit met at a later HDF5 call ends with status 2 naming the reason (no HDF5 stack), no .tmp left"
