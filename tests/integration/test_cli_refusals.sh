#!/usr/bin/env bash
# Command lines that ran to a wrong or harmful end are refused before any work, with status 2
# and a message naming the key or flag (a review of the CLI found each one running):
#  - alice probe with a crop the patch does not divide (it overflowed a buffer: status 134);
#  - beta2 = 0.99999999, stored as the float 1 (AdamW divided by 0: step 1 NaN);
#  - an MAE run whose mask masks no token (l_r was 0 at every step: weights never changed);
#  - the z_tubes error's suggested mask_ratio is accepted (it had suggested 0.722222, which
#    floors to a non-multiple and was refused again);
#  - an empty --out (phantom wrote into /, eval made hidden ./.h5 and ./.csv);
#  - a key=value a command does not read (match matcher=bbox ran both matchers);
#  - alice match --out into a missing folder (refused after the whole evaluation before);
#  - a probe whose crops hold one class (it scored 1.0 for every encoder), and --cases beyond
#    the data (sized from the request: 553 GB asked for); a probe is not refused for the
#    checkpoint's mask keys, which it never uses;
#  - pretrain/finetune --resume without its value, or beside --no-resume; finetune --fold or
#    --pretrained without a value; a fold without labelled cases (no config.txt written).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
refused() {  # expected message, command args
  local want=$1; shift
  local rc=0
  (cd "$T/cwd" && "$ALICE" "$@") > "$T/out" 2>&1 || rc=$?
  [ "$rc" = 2 ] || { cat "$T/out"; fail "status $rc, not 2, for: alice $*"; }
  grep -q -- "$want" "$T/out" || { cat "$T/out"; fail "no message '$want' for: alice $*"; }
  echo "ok: refused: alice $* -> $(grep -m1 'error' "$T/out" | cut -c1-110)"
}
mkdir -p "$T/cwd"
MICRO=$ROOT/tests/train/micro.cfg
"$ALICE" pretrain --config "$MICRO" run_dir="$T/pt" steps=1 ckpt_every=1 > /dev/null 2>&1 ||
  fail "the micro pre-training for the probe failed"
CKPT=$T/pt/ckpt_1.h5
refused "crop X = 20 is not a multiple of patch = 8" probe --checkpoint "$CKPT" crop=20,20,16
# a checkpoint short of an encoder tensor: the probe scored an encoder partly at random init as
# the pre-trained one (exit 0); it is refused as fine-tuning's pretrained = refuses it
"$PYTHON" - "$CKPT" "$T/short.h5" <<'PY' || fail "could not write a checkpoint short a tensor"
import shutil, sys, h5py
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    name = sorted(k for k in f["params"] if k.startswith("encoder."))[0]
    del f["params"][name]
PY
refused "short.h5 holds [0-9]* of the encoder's [0-9]* tensors" probe --checkpoint "$T/short.h5"
# the transformer's 48 blocks at most: named by the parser (an internal assertion in pretrain
# said "depth 49", also for dec_depth); a float key below float's range (lr became 0)
refused "depth = '49' is not valid: expected an integer in 1..48" config depth=49
refused "dec_depth = '49' is not valid: expected an integer in 1..48" config dec_depth=49
refused "lr = '1e-50' is below the smallest float" config lr=1e-50
# seed's range 0.. reaches LONG_MAX (a double's bound of 9.2e18 had refused the largest seeds)
"$ALICE" config seed=9223372036854775807 | grep -qx 'seed = 9223372036854775807' ||
  fail "the largest seed was not taken"
refused "seed = '9223372036854775808' is not valid" config seed=9223372036854775808
# a crop of more tokens than an int holds wrapped to "leaves no visible patch of -672510872"
refused "makes 4299161600 tokens, more than the 2^24" config crop=8192,8192,4100 patch=4
# the pre-training method's checks judge pre-training alone: a job file shared with it (z_tubes
# masks) does not stop fine-tuning at a crop the masks do not divide, where only a job-file
# edit could help (mask_ratio= and mask_shape= are refused on finetune's command line)
zt=(--config "$ROOT/jobs/finetune_tiny.cfg" --config "$ROOT/jobs/released_code_tiny.cfg"
    crop=48,32,32)
"$ALICE" config --finetune "${zt[@]}" > /dev/null ||
  fail "fine-tuning's configuration judged by pre-training's mask checks"
refused "mask_shape = z_tubes masks whole columns" config "${zt[@]}"
# z_tubes on one (x, y) column: the suggested ratio (0) was itself refused, a loop
refused "crop 8,8 at patch 8 makes one" config crop=8,8,16 patch=8 mask_shape=z_tubes mask_ratio=0.5
# a command-line key the command reads nowhere: pretrained = given to pre-training started it
# from random weights, silently; pre-training keys given to fine-tuning did nothing
refused "'pretrained=x.h5' sets a key of fine-tuning, evaluation or packing (--resume CKPT" \
  pretrain --config "$MICRO" run_dir="$T/pk" pretrained=x.h5
refused "'mask_ratio=0.3' sets a key of pre-training, which" \
  finetune data=synthetic run_dir="$T/fk" mask_ratio=0.3
[ ! -e "$T/pk" ] && [ ! -e "$T/fk" ] || fail "a refused run created its run_dir"
refused "beta2 = 1 must each be below 1" pretrain --config "$MICRO" run_dir="$T/b" beta2=0.99999999
refused "mask_ratio = 0 masks no token of 32" pretrain --config "$MICRO" run_dir="$T/m" method=mae \
  mask_ratio=0
"$ALICE" config mask_shape=z_tubes crop=96,96,64 mask_ratio=0.71 > "$T/z.log" 2>&1 &&
  fail "mask_ratio 0.71 with z_tubes accepted"
suggested=$(sed -n 's/.*(e.g. \([0-9.]*\)).*/\1/p' "$T/z.log")
[ -n "$suggested" ] || { cat "$T/z.log"; fail "no suggested mask_ratio"; }
"$ALICE" config mask_shape=z_tubes crop=96,96,64 mask_ratio="$suggested" > /dev/null ||
  fail "the suggested mask_ratio $suggested is refused by the same check"
echo "ok: the z_tubes error's suggestion ($suggested) is accepted"
refused "alice phantom: --out DIR is required" phantom --out "" --cases 1
refused "eval: --out is empty" eval --pred "$T" --labels "$T" --out ""
[ -z "$(ls -A "$T/cwd")" ] || fail "a refused command wrote into its working folder: $(ls -A "$T/cwd")"
refused "'matcher=bbox' sets a key alice match does not use" match --eval matcher=bbox
refused "'crop=32,32,32' sets a key alice phantom does not use" phantom --out "$T/ph" --cases 1 \
  crop=32,32,32
refused "'sw_overlap=0.9' sets a key alice eval does not use" eval --pred "$T" --labels "$T" \
  sw_overlap=0.9
refused "match: --out $T/no/t.md: the folder $T/no does not exist" match --eval --out "$T/no/t.md"
refused "match: --out $T is a folder" match --eval --out "$T"
# 16^3 crops of patch 8 around a random body centre of the micro model's synthetic cases are
# mostly one class; a 8^3 crop (one token) is one class by construction
refused "hold 1 class: a k-NN probe of one class" probe --checkpoint "$CKPT" crop=8,8,8 --crops 1
"$ALICE" probe --checkpoint "$CKPT" --cases 50 --crops 1 > "$T/p.log" 2>&1 ||
  { cat "$T/p.log"; fail "probe with --cases beyond the data"; }
grep -q "probe: --cases 50, but synthetic has 4 labelled cases: probing those 4" "$T/p.log" ||
  { cat "$T/p.log"; fail "--cases beyond the data not said"; }
echo "ok: probe --cases beyond the data probes the cases there are, saying so"
# the probe judges only what it reads: a checkpoint trained with z_tube masks probed at a crop
# its mask_ratio does not fit (the pre-training check had refused it, then refused the
# mask_ratio it suggested as a key the probe does not read)
"$ALICE" pretrain --config "$MICRO" run_dir="$T/zt" steps=1 ckpt_every=1 mask_shape=z_tubes \
  > /dev/null 2>&1 || fail "the z_tubes micro pre-training failed"
"$ALICE" probe --checkpoint "$T/zt/ckpt_1.h5" crop=24,24,24 --crops 2 > "$T/zt.log" 2>&1 ||
  { cat "$T/zt.log"; fail "probe refused a crop for the checkpoint's mask settings"; }
echo "ok: a z_tubes checkpoint probes at a crop its mask_ratio does not fit"
# the training commands' own flags: --resume without its checkpoint (had been "unknown
# argument '--resume'"), and --resume beside --no-resume (the checkpoint had won in silence)
for cmd in pretrain finetune; do
  # steps=1: a refusal that broke trains one step and fails here, not a default-length run
  short=(data=synthetic steps=1 run_dir="$T/r_$cmd")
  refused "alice $cmd: --resume needs a value" $cmd "${short[@]}" --resume
  refused "alice $cmd: --stop-after needs a value" $cmd "${short[@]}" --stop-after
  refused "--resume x.h5 and --no-resume contradict each other" $cmd "${short[@]}" \
    --no-resume --resume x.h5
  refused "--resume x.h5 and --no-resume contradict each other" $cmd "${short[@]}" \
    --resume x.h5 --no-resume
done
# a fold without labelled cases: refused before run_dir is written to (no config.txt)
"$ALICE" phantom --out "$T/ph3" --cases 3 --size small --seed 1 > /dev/null
"$ALICE" pack --input "$T/ph3" --out "$T/ph3.h5" spacing=4,4,4 num_folds=5 > /dev/null 2>&1
refused "fold = 4 holds no labelled case of .*ph3.h5 (3 labelled cases" \
  finetune data="$T/ph3.h5" fold=4 run_dir="$T/ft4" steps=1
[ ! -e "$T/ft4/config.txt" ] || fail "the refused fine-tuning start wrote config.txt"
# fold 0 without a labelled case (its one case moved to fold 3): refused as fold 4 is, not
# trained without validation
"$PYTHON" - "$T/ph3.h5" "$T/ph3f.h5" <<'PY' || fail "could not empty fold 0"
import shutil, sys, h5py
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    for i, name in enumerate(f["index/name"][()]):
        g = f["cases"][name.decode()]
        if int(g.attrs["fold"]) == 0:
            g.attrs["fold"] = g.attrs["fold"] * 0 + 3
            f["index/fold"][i] = 3
PY
refused "fold = 0 holds no labelled case of .*ph3f.h5" \
  finetune data="$T/ph3f.h5" fold=0 run_dir="$T/ft0" steps=1
refused "alice finetune: --fold needs a value" finetune data=synthetic --fold
refused "alice finetune: --pretrained needs a value" finetune data=synthetic --pretrained
echo PASS
