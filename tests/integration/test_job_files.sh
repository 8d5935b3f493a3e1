#!/usr/bin/env bash
# Every job file under jobs/ resolves through the configuration checks: the presets alone, each
# overlay (ablation_*, released_code_*) stacked on the preset of its size (*_tiny.cfg on
# jobs/pretrain_tiny.cfg, *_vitb_paper.cfg on jobs/pretrain_vitb_paper.cfg), as their headers
# say to run them; the values an overlay sets are those of the resolved configuration. Then the
# released code's recipe at toy size trains two steps.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$ROOT"
fail() { echo "FAIL: $*"; exit 1; }
n=0
for f in jobs/*.cfg; do
  base=$(basename "$f" .cfg)
  case $base in
    ablation_*_tiny|released_code_tiny) stack=(--config jobs/pretrain_tiny.cfg --config "$f") ;;
    ablation_*_vitb_paper|released_code_vitb_paper)
      stack=(--config jobs/pretrain_vitb_paper.cfg --config "$f") ;;
    *) stack=(--config "$f") ;;
  esac
  "$ALICE" config "${stack[@]}" >"$T/$base.txt" 2>"$T/$base.err" ||
    { cat "$T/$base.err"; fail "$f does not resolve (alice config ${stack[*]})"; }
  # every key = value line the file sets is the resolved value (no comment or typo lost it)
  while IFS= read -r line; do
    kv=$(sed -e 's/[[:space:]]#.*$//' -e 's/[[:space:]]*$//' <<<"$line")
    [[ $kv == *=* ]] || continue
    key=$(sed 's/[[:space:]]*=.*//' <<<"$kv"); value=$(sed 's/^[^=]*=[[:space:]]*//' <<<"$kv")
    got=$(sed -n "s/^$key = //p" "$T/$base.txt")
    [ "$got" = "$value" ] && continue
    # numbers print as the float32 they became (1e-4 -> 9.99999975e-05)
    awk -v a="$value" -v b="$got" 'BEGIN { d = a - b; if (d < 0) d = -d;
      m = a < 0 ? -a : a; exit !(a ~ /^[-+0-9.eE]+$/ && b ~ /^[-+0-9.eE]+$/ && d <= 1e-6 * m) }' ||
      fail "$f sets $key = $value, the resolved configuration has $key = $got"
  done < <(grep -v '^[[:space:]]*#' "$f")
  n=$((n + 1))
done
echo "ok: $n job files resolve, every value they set taken"
"$ALICE" pretrain --config jobs/pretrain_tiny.cfg --config jobs/released_code_tiny.cfg \
  run_dir="$T/run" steps=2 warmup=1 warmup_teacher_temp_steps=1 >"$T/run.log" 2>&1 ||
  { tail -20 "$T/run.log"; fail "the released code's recipe (tiny) did not train"; }
[ "$(($(wc -l <"$T/run/metrics.csv") - 1))" = 2 ] || fail "released_code_tiny: not 2 metrics rows"
echo "ok: jobs/released_code_tiny.cfg trains"
