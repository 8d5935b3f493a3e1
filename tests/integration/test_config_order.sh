#!/usr/bin/env bash
# The order of --config and key=value on the command line (docs/CONFIG.md): job files apply in
# command-line order, so a later file's value wins over an earlier file's; key=value arguments
# win over every job file, also over one given after them (a job file after `steps=7` used to
# reset steps to the file's 200); alice config --finetune resolves what alice finetune does.
set -euo pipefail
ALICE=${ALICE:-bin/alice}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
printf 'steps = 11\nlr = 1e-3\n' > "$T/a.cfg"
printf 'steps = 22\n' > "$T/b.cfg"
get() { "$ALICE" config "$@" | sed -n "s/^$KEY = //p"; }
KEY=steps
[ "$(get --config "$T/a.cfg" --config "$T/b.cfg")" = 22 ] || { echo "FAIL: the later job file does not win"; exit 1; }
[ "$(get steps=7 --config "$T/a.cfg" --config "$T/b.cfg")" = 7 ] || { echo "FAIL: key=value before the files lost"; exit 1; }
[ "$(get --config "$T/a.cfg" steps=7 --config "$T/b.cfg")" = 7 ] || { echo "FAIL: key=value between the files lost"; exit 1; }
KEY=lr
[ "$(get steps=7 --config "$T/a.cfg" --config "$T/b.cfg")" = 0.001 ] || { echo "FAIL: a file's other key lost: $(get --config "$T/a.cfg")"; exit 1; }
# a command's flags that set keys win the same way: alice finetune --fold/--pretrained before
# a job file setting fold (finetune_tiny: fold = 0) used to be reset by it (a 5-fold loop
# trained fold 0 five times); alice phantom --seed, alice match --data alike
resolved() { { "$ALICE" "$@" 2>&1 || true; } | sed -n "s/^#   $KEY = //p" | head -1; }
TINY=$(dirname "$0")/../../jobs/finetune_tiny.cfg
printf 'fold = 1\npretrained = %s/from_file.h5\n' "$T" > "$T/ft.cfg"
KEY=fold
got=$(resolved finetune --fold 2 --config "$T/ft.cfg" --config "$TINY" --bench-steps 1)
[ "$got" = 2 ] || { echo "FAIL: --fold 2 before job files lost to them: fold = $got"; exit 1; }
KEY=pretrained
got=$(resolved finetune --pretrained "$T/nowhere.h5" --config "$T/ft.cfg" --bench-steps 1)
[ "$got" = "$T/nowhere.h5" ] ||
  { echo "FAIL: --pretrained before a job file lost to it: pretrained = $got"; exit 1; }
printf 'seed = 5\n' > "$T/ph.cfg"
phantom_cases() { "$ALICE" phantom --cases 2 --size small "$@" | grep -E '^ +case000[01] '; }
flag_first=$(phantom_cases --seed 9 --config "$T/ph.cfg" --out "$T/p1")
[ "$flag_first" = "$(phantom_cases --seed 9 --out "$T/p2")" ] &&
  [ "$flag_first" != "$(phantom_cases --seed 5 --out "$T/p3")" ] ||
  { echo "FAIL: alice phantom --seed 9 before a job file lost to it: $flag_first"; exit 1; }
# alice config --finetune resolves what alice finetune resolves (its own defaults first): every
# line the same for a job file and a key=value
"$ALICE" config --finetune --config "$TINY" lr=3e-4 > "$T/config.txt"
{ "$ALICE" finetune --config "$TINY" lr=3e-4 --bench-steps 1 2>&1 || true; } |
  sed -n 's/^#   //p' > "$T/finetune.txt"
[ -s "$T/finetune.txt" ] && diff "$T/config.txt" "$T/finetune.txt" > "$T/diff.txt" ||
  { cat "$T/diff.txt"; echo "FAIL: alice config --finetune differs from alice finetune"; exit 1; }
echo "ok: files in order, key=value (and the flags that set keys) win wherever they stand"
