#!/usr/bin/env bash
# alice pack --force onto an --out that is a symbolic link (data/dataset.h5 -> /scratch/...)
# writes the link's target, through a temporary file beside the target: the link stays a link
# and everything reading the target reads the new data set. Before, the rename replaced the
# link by a regular file in the link's folder and the target kept the old data. A link to
# nothing ends with status 2 naming the link, before any case is read.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
PYTHON=${PYTHON:-/usr/bin/python3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$ALICE" phantom --out "$T/ph" --cases 2 --size small --seed 3 > /dev/null 2>&1 || fail "phantom"
mkdir -p "$T/scratch" "$T/data"
"$ALICE" pack --input "$T/ph/imagesTr" --out "$T/scratch/ds.h5" spacing=3,3,3 > /dev/null 2>&1 ||
  fail "the first pack"
ln -s ../scratch/ds.h5 "$T/data/ds.h5"
"$ALICE" pack --input "$T/ph/imagesTr" --out "$T/data/ds.h5" --force spacing=4,4,4 > "$T/p.log" 2>&1 ||
  { cat "$T/p.log"; fail "pack --force onto the link"; }
[ -L "$T/data/ds.h5" ] || fail "the link was replaced by $(stat -c %F "$T/data/ds.h5")"
grep -q "is a symbolic link: writing its target $T/scratch/ds.h5" "$T/p.log" ||
  { cat "$T/p.log"; fail "the link's target was not named"; }
spacing=$("$PYTHON" -c "import h5py,sys; print(list(h5py.File(sys.argv[1])['/'].attrs['spacing']))" "$T/scratch/ds.h5")
[ "$spacing" = "[4.0, 4.0, 4.0]" ] || fail "the target holds spacing $spacing, not the new data set's 4,4,4"
[ -z "$(find "$T/data" "$T/scratch" -name '*.tmp*')" ] ||
  fail "a temporary file was left: $(find "$T/data" "$T/scratch" -name '*.tmp*')"
echo "ok: pack --force onto a link wrote its target (spacing $spacing), the link kept"
ln -s ../scratch/none.h5 "$T/data/dangling.h5"
rc=0
"$ALICE" pack --input "$T/ph/imagesTr" --out "$T/data/dangling.h5" > "$T/d.log" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "data/dangling.h5 is a symbolic link to nothing" "$T/d.log" ||
  { cat "$T/d.log"; fail "a link to nothing: status $rc"; }
echo "ok: a link to nothing refused: $(grep -m1 error "$T/d.log" | cut -c1-100)"
