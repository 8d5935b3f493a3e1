#!/usr/bin/env bash
# The order of --config and key=value on the command line (docs/CONFIG.md): job files apply in
# command-line order, so a later file's value wins over an earlier file's; key=value arguments
# win over every job file, also over one given after them (a job file after `steps=7` used to
# reset steps to the file's 200).
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
echo "ok: files in order, key=value wins wherever it stands"
