#!/usr/bin/env bash
# Job files and values as users write them (src/core/config.c): a UTF-8 byte-order mark
# (Windows editors) and CRLF line ends are read as plain text; a job file given through a pipe
# (process substitution, no size) is read, not silently empty; a directory given as a job file
# is refused naming it; values past their C type (batch = 3e9 wrapped to -2147483648, steps =
# 1e30, lr = 1e39 became inf) and nan in a triple (spacing = nan crashed pack) are refused.
set -euo pipefail
ALICE=${ALICE:-bin/alice}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
value() { sed -n "s/^$1 = //p"; }
printf '\xEF\xBB\xBFsteps = 17\r\nlr = 0.25\r\n' > "$T/bom.cfg"
out=$("$ALICE" config --config "$T/bom.cfg") || fail "a job file with a BOM and CRLF was refused"
[ "$(echo "$out" | value steps)" = 17 ] && [ "$(echo "$out" | value lr)" = 0.25 ] ||
  fail "BOM/CRLF job file misread: steps $(echo "$out" | value steps), lr $(echo "$out" | value lr)"
out=$("$ALICE" config --config <(printf 'steps = 23\n')) || fail "a job file through a pipe was refused"
[ "$(echo "$out" | value steps)" = 23 ] || fail "a job file through a pipe was ignored"
refused() {  # expected message, args
  local want=$1; shift
  if "$ALICE" config "$@" > "$T/out" 2>&1; then fail "accepted: $*"; fi
  grep -q "$want" "$T/out" || { cat "$T/out"; fail "no message '$want' for: $*"; }
}
refused "is a directory" --config "$T"
refused "batch = '3e9' is not valid" batch=3e9
refused "steps = '1e30' is not valid" steps=1e30
refused "lr = '1e39' is not valid" lr=1e39
refused "spacing = 'nan' is not valid" spacing=nan
refused "crop = '96,nan,64' is not valid" crop=96,nan,64
echo "ok: BOM, CRLF and piped job files read; a directory and out-of-type values refused"
