#!/usr/bin/env bash
# The batch-side scripts (slurm/) run on cluster nodes with bash 4.2 (RHEL/CentOS 7), where
# "${a[@]}" (or ${a[*]}) of an empty array is an unbound variable under `set -u` (fixed in
# bash 4.4) and newer features do not exist. This machine's bash is newer, so the rule is
# checked on the text: every "${a[@]}" is written ${a[@]+"${a[@]}"}, unless the script names
# `a` on its "arrays that are never empty:" comment line; no mapfile -d, ${x@Q}-style
# transformations, `wait -n`, namerefs (declare -n, 4.3) or negative array subscripts (4.3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
bad=0
for f in slurm/*.sh slurm/*.sbatch slurm/examples/*.sh; do
  # arrays the script declares never empty (a comment line, possibly continued on the next)
  allowed=" $( (grep -A1 'arrays that are never empty:' "$f" || true) |
    sed -e 's/.*never empty://' -e 's/^# *//' -e 's/;.*//' | tr '\n' ' ') "
  while IFS=: read -r line text; do
    # the guarded forms ${a[@]+"${a[@]}"} and counts ${#a[@]} are safe; any other ${a[@]} or
    # ${a[*]}, quoted or not, is not
    for name in $(sed -E -e 's/\$\{([A-Za-z_]+)\[[@*]\]\+"\$\{\1\[[@*]\]\}"\}//g' \
                         -e 's/\$\{#[A-Za-z_]+\[[@*]\]\}//g' <<<"$text" |
                  grep -oE '\$\{[A-Za-z_]+\[[@*]\]\}' | sed -E 's/^\$\{([A-Za-z_]+).*/\1/'); do
      [[ $allowed == *" $name "* ]] && continue
      echo "FAIL: $f:$line: \${$name[@]} fails under set -u in bash < 4.4 when empty;" \
        "write \${$name[@]+\"\${$name[@]}\"}"
      bad=$((bad + 1))
    done
  done < <(grep -nE '\[[@*]\]' "$f" | grep -v '^[0-9]*: *#' || true)
  newer='mapfile -d|readarray -d|\$\{[A-Za-z_]+@[QEPAaKkUuL]\}|wait -n|declare -n|local -n|\[-1\]'
  if grep -nE "$newer" "$f"; then
    echo "FAIL: $f: a bash >= 4.3 feature (above)"
    bad=$((bad + 1))
  fi
done
[ "$bad" = 0 ] || exit 1
echo "ok: slurm/ scripts guard every possibly empty array and use no bash >= 4.3 feature"
