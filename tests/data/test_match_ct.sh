#!/usr/bin/env bash
# Real-scan known answer: example_ct_sm.nii.gz is slices 82..111 of example_ct.nii.gz with a
# stale (unshifted) affine, so a point (x, y, z) of the small scan is (x, y, z + 82) of the big
# one. The profile matcher must find it to within a voxel (3 mm) and beat the bbox baseline.
# Skips when the scan directory is absent ($ALICE_CT_DIR overrides ../shared/data/ct).
set -eu
dir=${ALICE_CT_DIR:-../shared/data/ct}
if [ ! -f "$dir/example_ct.nii.gz" ] || [ ! -f "$dir/example_ct_sm.nii.gz" ]; then
  echo "skip: real CT scan not found in $dir (set ALICE_CT_DIR)"
  exit 77
fi
tool=${BUILD:-build}/tools/match_nifti
[ -x "$tool" ] || { echo "missing $tool (make tests-build)"; exit 1; }
out=$("$tool" "$dir/example_ct_sm.nii.gz" "$dir/example_ct.nii.gz" 82)
echo "$out"
profile=$(echo "$out" | awk '/^matcher profile/ {print $6}')
bbox=$(echo "$out" | awk '/^matcher bbox/ {print $6}')
echo "example_ct_sm -> example_ct landmark error: profile ${profile} mm, bbox baseline ${bbox} mm"
# numbers, or awk compares strings ("" < 3.0 holds) and a renamed or NaN line passes
number='^[0-9]+([.][0-9]+)?$'
[[ $profile =~ $number && $bbox =~ $number ]] ||
  { echo "FAIL: no errors read from the tool's output (profile '$profile', bbox '$bbox')"; exit 1; }
awk -v p="$profile" -v b="$bbox" 'BEGIN { exit !(p < 3.0 && p < b) }' || {
  echo "FAIL: profile matcher error ${profile} mm (want < 3 mm and below the baseline ${bbox} mm)"; exit 1; }
