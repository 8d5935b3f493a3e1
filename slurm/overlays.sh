# alice_map_overlays COPY ARG...: sets the array alice_args to the ARGs with every job file among
# them (`--config FILE`, `-c FILE` or `--config=FILE`: an ablation overlay) replaced by what
# `COPY FILE K` prints (K = 0, 1, ... in order), its copy; returns 1 when COPY failed (it said
# why), 3 when a --config ends the arguments without a file (the caller words it). Shared by
# slurm/common.sh (the batch jobs' copies at their first start) and slurm/chain.sh (the copies
# made at submission), so both read a stage's arguments alike. Defines functions only.
alice_map_overlays() {
  local copy_fn=$1 k=0 pending=0 a copy
  shift
  alice_args=()
  for a in "$@"; do
    if [ $pending = 1 ]; then
      copy=$("$copy_fn" "$a" "$k") || return 1
      alice_args+=("$copy"); k=$((k + 1)); pending=0
    elif [ "$a" = --config ] || [ "$a" = -c ]; then
      alice_args+=("$a"); pending=1
    elif [[ $a == --config=* ]]; then
      copy=$("$copy_fn" "${a#--config=}" "$k") || return 1
      alice_args+=("--config=$copy"); k=$((k + 1))
    else
      alice_args+=("$a")
    fi
  done
  [ $pending = 0 ] || return 3
}

# alice_owned_word "KEY ..." ARG...: prints the first ARG that sets one of the KEYs (KEY=...,
# or the flag --KEY / --KEY=... that alice finetune also takes for fold and pretrained) and
# returns 0; returns 1 when none does. A script or the chain that sets such a key itself
# refuses it among the arguments it passes on: the command line's last value wins in alice, so
# fold=0 given to fold 2's array task trained fold 0 into fold2/, silently.
alice_owned_word() {
  local keys=$1 word key
  shift
  for word in "$@"; do
    for key in $keys; do
      [[ $word == "$key="* || $word == "--$key" || $word == "--$key="* ]] &&
        { printf '%s\n' "$word"; return 0; }
    done
  done
  return 1
}

