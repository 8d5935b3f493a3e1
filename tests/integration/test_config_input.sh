#!/usr/bin/env bash
# Job files and values as users write them (src/core/config.c): a UTF-8 byte-order mark
# (Windows editors) and CRLF line ends are read as plain text; a job file given through a pipe
# (process substitution, no size) is read, not silently empty; a directory given as a job file
# is refused naming it; values past their C type (batch = 3e9 wrapped to -2147483648, steps =
# 1e30, lr = 1e39 became inf) and nan in a triple (spacing = nan crashed pack) are refused;
# integers are exact and decimal, a '#' inside a value belongs to it (a path like runs/exp#1
# came back from a checkpoint as runs/exp), a NUL byte or a repeated key in a job file is named,
# and a quoted value (the quotes would become part of it) is refused.
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
# crop past int (3e9 was converted out of range), hexadecimal integers (seed = 0x10 read as 16)
refused "crop = '3e9' is not valid" crop=3e9
refused "seed = '0x10' is not valid" seed=0x10
refused "crop = '0x20,0x20,0x10' is not valid" crop=0x20,0x20,0x10
refused "spacing = '0x1p1' is not valid" spacing=0x1p1
# an integer past 2^53 keeps every digit (through a double it became its even neighbour)
[ "$("$ALICE" config seed=9007199254740993 | value seed)" = 9007199254740993 ] ||
  fail "seed = 9007199254740993 not kept exactly"
# a '#' inside a value (no space before it) is part of it, through a checkpoint's text too;
# one after a space, or a line break, cannot be read back: refused
printf 'run_dir = runs/exp#1   # a comment\n' > "$T/hash.cfg"
[ "$("$ALICE" config --config "$T/hash.cfg" | value run_dir)" = "runs/exp#1" ] ||
  fail "run_dir = runs/exp#1 not read as written"
refused "run_dir = 'runs/a #1' holds a line break, or a '#'" "run_dir=runs/a #1"
# a NUL byte (a binary file given as a job file) is refused, not cut there silently
printf 'steps = 5\n\0lr = 7\n' > "$T/nul.cfg"
refused "holds a NUL byte at offset 10" --config "$T/nul.cfg"
# a key set twice in one job file: a warning naming both lines (the later value wins)
printf 'steps = 5\nlr = 0.1\nsteps = 6\n' > "$T/twice.cfg"
out=$("$ALICE" config --config "$T/twice.cfg" 2>&1) || fail "a key set twice was refused"
echo "$out" | grep -q "twice.cfg:3: steps is set again (first at line 1)" ||
  fail "no warning for a key set twice: $out"
[ "$(echo "$out" | value steps)" = 6 ] || fail "a key set twice: the later value not used"
echo "ok: BOM, CRLF and piped job files read; a directory and out-of-type values refused"
# values are taken as written: a quoted one would keep its quotes (run_dir = "runs/x" was a
# folder named with them); refused with the unquoted spelling
printf 'run_dir = "runs/x"\n' > "$T/quoted.cfg"
refused 'quoted.cfg:1: run_dir = "runs/x" is quoted.*write run_dir = runs/x' --config "$T/quoted.cfg"
printf "method = 'mae'\n" > "$T/quoted1.cfg"
refused "quoted1.cfg:1: method = 'mae' is quoted.*write method = mae" --config "$T/quoted1.cfg"
echo "ok: exact integers, no hexadecimal, '#' inside values, NUL bytes and repeated keys;" \
  "quoted values refused"
