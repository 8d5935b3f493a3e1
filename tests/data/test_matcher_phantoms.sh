#!/usr/bin/env bash
# The anatomical matcher beats the bounding-box baseline on phantoms: 12 phantoms (full and
# partial fields of view) written by `alice phantom`, packed by `alice pack`, evaluated by
# `alice match --eval`; the "all" row's profile mean and median must be below the baseline's.
set -euo pipefail   # alice match | tee: a crash after the table is a failure too
ALICE=${ALICE:-bin/alice}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$ALICE" phantom --out "$tmp/ph" --cases 12 --seed 1234 >"$tmp/phantom.log"
"$ALICE" pack --input "$tmp/ph" --out "$tmp/dataset.h5" >"$tmp/pack.log" 2>&1 || {
  cat "$tmp/pack.log"; echo "alice pack failed"; exit 1; }
"$ALICE" match --eval --data "$tmp/dataset.h5" --out "$tmp/table.md" | tee "$tmp/match.log"
[ -s "$tmp/table.md" ] || { echo "--out table missing"; exit 1; }
# | all | n | profile mean | profile median | bbox mean | bbox median |
row=$(grep '^| all |' "$tmp/match.log")
read -r pm pmed bm bmed <<<"$(echo "$row" | awk -F'|' '{print $4, $5, $6, $7}')"
echo "phantom landmark error: profile mean $pm median $pmed mm; bbox mean $bm median $bmed mm"
awk -v a="$pm" -v b="$bm" -v c="$pmed" -v d="$bmed" 'BEGIN { exit !(a < b && c < d) }' || {
  echo "FAIL: the profile matcher does not beat the bbox baseline"; exit 1; }
