#!/usr/bin/env bash
# alice pack: seconds per case with 1 and 2 ranks (speed-up = t1 / t2) and dataset.h5 size
# beside the input .nii.gz size (ratio). CASES (default 8) small phantoms are generated first.
set -eu
ALICE=${ALICE:-bin/alice}
CASES=${CASES:-8}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$ALICE" phantom --out "$tmp/in" --cases "$CASES" --seed 5 >/dev/null
t0=$(date +%s.%N)
"$ALICE" pack --input "$tmp/in" --out "$tmp/one.h5" >/dev/null
t1=$(date +%s.%N)
mpirun -np 2 --oversubscribe "$ALICE" pack --input "$tmp/in" --out "$tmp/two.h5" >/dev/null
t2=$(date +%s.%N)
in_bytes=$(du -cb "$tmp"/in/imagesTr/* "$tmp"/in/labelsTr/* | tail -1 | cut -f1)
out_bytes=$(stat -c %s "$tmp/one.h5")
awk -v a="$t0" -v b="$t1" -v c="$t2" -v n="$CASES" -v i="$in_bytes" -v o="$out_bytes" -v cores="$(nproc)" 'BEGIN {
  one = b - a; two = c - b
  printf "pack %d small phantoms (%d cores)\n", n, cores
  printf "  1 rank : %.3f s/case\n", one / n
  printf "  2 ranks: %.3f s/case   speed-up 1->2 ranks: %.2fx\n", two / n, one / two
  printf "  input .nii.gz %.1f MiB, dataset.h5 %.1f MiB (ratio %.2f; dataset at 1.5x1.5x2 mm vs input ~2.8x2.8x3.5 mm)\n", i / 1048576, o / 1048576, o / i
}'
