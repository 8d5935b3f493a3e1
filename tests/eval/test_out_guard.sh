#!/usr/bin/env bash
# --out of alice eval (a stem: STEM.h5 and STEM.csv) and of alice match replaces only what
# that command wrote before. `--out dataset` beside `--data dataset.h5` replaced the packed data
# set with results (exit 0), a checkpoint's stem its checkpoint, and match's --out wrote its
# table over a data set. Each is refused (exit 2) with the file unchanged; an earlier result
# of the same command (also an older alice's, or re-saved with CRLF) and an empty file are
# still replaced.
set -u
ALICE=${ALICE:-bin/alice}
fail() { echo "FAIL: $*"; exit 1; }
[ -x "$ALICE" ] || { echo "skip: $ALICE not built"; exit 77; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
"$ALICE" phantom --out "$W/ph" --cases 2 --size small > /dev/null 2>&1 || fail "phantom"
"$ALICE" pack --input "$W/ph" --out "$W/data.h5" spacing=4,4,4 > /dev/null 2>&1 || fail "pack"
# the labels themselves as predictions: a perfect score, on the source grids
mkdir -p "$W/pred" && cp "$W"/ph/labelsTr/*.nii.gz "$W/pred/"

refused() {  # expected message, file that must stay unchanged, alice args
  local want=$1 keep=$2; shift 2
  local before rc=0
  before=$(md5sum < "$keep")
  "$ALICE" "$@" > "$W/out.log" 2>&1 || rc=$?
  [ "$rc" = 2 ] || { cat "$W/out.log"; fail "status $rc, not 2, for: alice $*"; }
  grep -q -- "$want" "$W/out.log" || { cat "$W/out.log"; fail "no '$want' for: alice $*"; }
  [ "$(md5sum < "$keep")" = "$before" ] || fail "$keep changed by: alice $*"
  echo "ok: refused, $(basename "$keep") unchanged: alice $* ->" \
    "$(grep -m1 error "$W/out.log" | cut -c1-90)"
}

# eval: its own results are replaced on a second run
for run in 1 2; do
  "$ALICE" eval --pred "$W/pred" --data "$W/data.h5" --out "$W/res" > "$W/e$run.log" 2>&1 ||
    { cat "$W/e$run.log"; fail "eval run $run into its own results"; }
done
# its own results as an older alice wrote them (no truth_voxels column), or re-saved with CRLF
# line ends; and empty files (mktemp's): replaced too
cut -d, -f1-4 "$W/res.csv" > "$W/old.csv" && mv "$W/old.csv" "$W/res.csv"
sed 's/$/\r/' "$W/res.csv" > "$W/crlf.csv" && cp "$W/res.h5" "$W/crlf.h5"
: > "$W/empty.h5"; : > "$W/empty.csv"
for stem in res crlf empty; do
  "$ALICE" eval --pred "$W/pred" --data "$W/data.h5" --out "$W/$stem" > "$W/e_$stem.log" 2>&1 ||
    { cat "$W/e_$stem.log"; fail "eval into $stem (its own older, CRLF or empty output)"; }
done
echo "ok: eval replaces its own earlier results"
refused "would replace $W/data.h5, which is not results of alice eval (format = 'alice-dataset')" \
  "$W/data.h5" eval --pred "$W/pred" --data "$W/data.h5" --out "$W/data"
"$ALICE" pretrain --config tests/train/micro.cfg run_dir="$W/run" steps=1 ckpt_every=1 \
  > /dev/null 2>&1 || fail "the micro pre-training"
refused "would replace $W/run/ckpt_1.h5, which is not results of alice eval" \
  "$W/run/ckpt_1.h5" eval --pred "$W/pred" --data "$W/data.h5" --out "$W/run/ckpt_1"
printf 'organ,mean\nliver,0.9\n' > "$W/table.csv"
refused "would replace $W/table.csv, which is not results of alice eval (its first line" \
  "$W/table.csv" eval --pred "$W/pred" --data "$W/data.h5" --out "$W/table"

# match: its own report replaced, anything else refused
for run in 1 2; do
  "$ALICE" match --eval --data "$W/data.h5" --out "$W/match.md" > "$W/m$run.log" 2>&1 ||
    { cat "$W/m$run.log"; fail "match run $run into its own report"; }
done
: > "$W/empty.md"
"$ALICE" match --eval --data "$W/data.h5" --out "$W/empty.md" > "$W/m3.log" 2>&1 ||
  { cat "$W/m3.log"; fail "match into an empty file"; }
echo "ok: match replaces its own earlier report"
refused "exists and is not a report of alice match" "$W/data.h5" \
  match --eval --data "$W/data.h5" --out "$W/data.h5"
echo "ok: eval and match refuse to replace files they did not write"
