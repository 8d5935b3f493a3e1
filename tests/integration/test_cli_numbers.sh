#!/usr/bin/env bash
# The commands' number flags take whole numbers in their range and nothing else: text after
# the digits ("2x", "3abc"), a float ("1e3") or a value out of range ends the command naming
# the flag, the value and the range, before any work (they were read with atoi/strtol/sscanf:
# `alice phantom --cases 1e3` wrote 1 case, `alice probe --crops 0` printed a NaN accuracy,
# `alice probe --cases -2` tried to allocate 16 EiB, `alice infer --cases fold:1x` ran fold 1).
set -uo pipefail
ALICE=${ALICE:-bin/alice}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
refused() {  # flag value-shown, command...
  local flag=$1 value=$2; shift 2
  if "$ALICE" "$@" > "$T/out.log" 2>&1; then echo "FAIL: accepted: alice $*"; exit 1; fi
  grep -qF -- "$flag '$value' is not a whole number in" "$T/out.log" ||
    { cat "$T/out.log"; echo "FAIL: no message naming $flag '$value': alice $*"; exit 1; }
  [ ! -e "$T/ph" ] || { echo "FAIL: alice $* wrote $T/ph"; exit 1; }
}
refused --cases 1e3 phantom --out "$T/ph" --cases 1e3
refused --cases abc phantom --out "$T/ph" --cases abc
refused --first 3abc phantom --out "$T/ph" --cases 1 --first 3abc
refused --cases 0 phantom --out "$T/ph" --cases 0
refused --crops 0 probe --checkpoint "$T/none.h5" --crops 0
refused --cases 2x probe --checkpoint "$T/none.h5" --cases 2x
refused --cases -2 probe --checkpoint "$T/none.h5" --cases -2
refused --k 65 probe --checkpoint "$T/none.h5" --k 65
refused "--cases fold:K" 1x infer --checkpoint "$T/none.h5" --data "$T/none.h5" --out "$T/p" \
  --cases fold:1x
refused "--cases fold:K" 100 eval --pred "$T" --data "$T/none.h5" --cases fold:100
echo "ok: number flags refuse anything but a whole number in range, naming it"
