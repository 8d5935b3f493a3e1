#!/usr/bin/env bash
# Submits the whole Alice workflow as one Slurm dependency chain and prints the job ids:
#
#   pack -> pretrain -> finetune (array over folds) -> infer (array, fold k after fold k)
#        -> eval
#
#   slurm/chain.sh --run-dir runs/exp1 --input /data/flare22/imagesTr \
#       --pretrain-config jobs/pretrain_vitb_paper.cfg --finetune-config jobs/finetune_btcv.cfg \
#       --eval-args "label_set=flare"    # FLARE data numbers its organs FLARE's way
#
# Options (each also settable by the environment variable in brackets):
#   --run-dir DIR            everything this chain writes goes under DIR (required) [ALICE_RUN_DIR]
#   --input PATH             NIfTI folder to pack, or phantoms:N for N synthetic phantoms
#                            [ALICE_INPUT]
#   --dataset FILE           use this packed data set and skip the pack job [ALICE_DATASET]
#   --pretrain-config FILE   [ALICE_PRETRAIN_CONFIG, default jobs/pretrain_vitb_paper.cfg]
#   --finetune-config FILE   also used by eval unless given (infer takes its settings from
#                            the checkpoint) [ALICE_FINETUNE_CONFIG, default jobs/finetune_btcv.cfg]
#   --eval-config FILE       [ALICE_EVAL_CONFIG]
#   --folds N                fine-tuning folds = array size, 2 at the least, and no more than
#                            the labelled cases [ALICE_FOLDS, default 5; with --dataset, the
#                            data set's num_folds, which a different N must match]
#   --nodes N, --gpus-per-node N   layout of the pre-training job (one task per GPU)
#                            [ALICE_NODES, default 1; ALICE_GPUS_PER_NODE, default 8]
#   --cpus-per-task N        [ALICE_CPUS_PER_TASK, default: the scripts' own]
#   --pack-tasks N           MPI ranks of the pack job [ALICE_PACK_TASKS, default: pack.sbatch's]
#   --partition P, --account A, --time-pretrain T   passed to sbatch
#   --mem-per-cpu M          memory per CPU for every job, passed to sbatch (e.g. 8G): on
#                            clusters that schedule memory (CR_Core_Memory) without a
#                            DefMemPerCPU, a job asking none gets a whole node's [ALICE_MEM_PER_CPU]
#   --pretrain-args "k=v ...", --finetune-args, --infer-args, --eval-args, --pack-args
#                            extra alice arguments for one stage, split into words at blanks,
#                            '...' or "..." keeping one ("--data 'my data/ds.h5'" is two
#                            words; xargs' rules: no escaped quote inside quotes)
#   --labels DIR             ground-truth label NIfTI folder for eval (default: the phantoms'
#                            labelsTr, or INPUT/../labelsTr or INPUT/labelsTr for FLARE-style
#                            input; with --dataset, the data set's labels (--data); else give
#                            --eval-args "--data <dataset.h5>") [ALICE_LABELS]
#   --dry-run                print the sbatch commands without submitting or writing anything
#
# The jobs are submitted held and released together once all five are in the queue: when one
# submission fails (a submit limit, a bad option), the ones before it are cancelled, so no
# stage runs on its own. A chain whose jobs.txt lists jobs still in the queue is not submitted
# twice into the same run directory (scancel them first, or use another --run-dir).
# Environment:
#   ALICE_GPUS=0             no GPU options (CPU-only partitions, the local test cluster):
#                            jobs get --gpus-per-task=0; --gpus-per-node then means tasks.
#   ALICE_SBATCH_OPTS        extra sbatch options for every job (e.g. "--qos=high")
#   ALICE_LAUNCHER, ALICE_BIN, ... see slurm/common.sh; they reach the jobs unchanged.
#
# Layout under the run directory:
#   data/dataset.h5 (and data/phantoms/), pretrain/ (ckpt_<step>.h5, metrics.csv),
#   finetune/fold<k>/, predictions/<case>.nii.gz, eval/results.{h5,csv}, logs/<job>-<id>.out,
#   jobs.txt (stage and job id, one per line), jobs/ (the job files and --config overlays as
#   they were at submission: every stage reads these copies).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/overlays.sh
source "$here/overlays.sh"
ALICE_HOME=${ALICE_HOME:-$(dirname "$here")}
export ALICE_HOME

run_dir=${ALICE_RUN_DIR:-}
input=${ALICE_INPUT:-}
dataset=${ALICE_DATASET:-}
labels=${ALICE_LABELS:-}
pretrain_cfg=${ALICE_PRETRAIN_CONFIG:-jobs/pretrain_vitb_paper.cfg}
finetune_cfg=${ALICE_FINETUNE_CONFIG:-jobs/finetune_btcv.cfg}
eval_cfg=${ALICE_EVAL_CONFIG:-}
folds=${ALICE_FOLDS:-5}
folds_given=${ALICE_FOLDS:+1}
nodes=${ALICE_NODES:-1}
gpus_per_node=${ALICE_GPUS_PER_NODE:-8}
cpus_per_task=${ALICE_CPUS_PER_TASK:-}
pack_tasks=${ALICE_PACK_TASKS:-}
mem_per_cpu=${ALICE_MEM_PER_CPU:-}
partition="" account="" time_pretrain=""
pack_args="" pretrain_args="" finetune_args="" infer_args="" eval_args=""
dry_run=0

# split_words NAME TEXT: TEXT's words into the array NAME, quoted as on a command line, so a
# path with spaces can be one word ("--data 'my data/ds.h5'"). xargs does the splitting: it
# honours quotes and backslashes and, unlike eval, runs nothing the text might hold.
split_words() {
  local name=$1 text=$2 word
  printf '%s' "$text" | xargs printf '' 2>/dev/null ||
    fail "cannot split '$text' into words (an unmatched quote?)"
  eval "$name=()"
  while IFS= read -r -d '' word; do
    eval "$name+=(\"\$word\")"
  done < <(printf '%s' "$text" | xargs -r printf '%s\0')   # -r: no text, no word
}
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
fail() { echo "chain.sh: error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case $1 in
    --run-dir) run_dir=$2; shift ;;
    --input) input=$2; shift ;;
    --dataset) dataset=$2; shift ;;
    --labels) labels=$2; shift ;;
    --pretrain-config) pretrain_cfg=$2; shift ;;
    --finetune-config) finetune_cfg=$2; shift ;;
    --eval-config) eval_cfg=$2; shift ;;
    --folds) folds=$2; folds_given=1; shift ;;
    --nodes) nodes=$2; shift ;;
    --gpus-per-node) gpus_per_node=$2; shift ;;
    --cpus-per-task) cpus_per_task=$2; shift ;;
    --pack-tasks) pack_tasks=$2; shift ;;
    --mem-per-cpu) mem_per_cpu=$2; shift ;;
    --partition) partition=$2; shift ;;
    --account) account=$2; shift ;;
    --time-pretrain) time_pretrain=$2; shift ;;
    --pack-args) pack_args=$2; shift ;;
    --pretrain-args) pretrain_args=$2; shift ;;
    --finetune-args) finetune_args=$2; shift ;;
    --infer-args) infer_args=$2; shift ;;
    --eval-args) eval_args=$2; shift ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    *) fail "unknown option '$1' (see --help)" ;;
  esac
  shift
done

[ -n "$run_dir" ] || fail "--run-dir is required (every output of the chain goes under it)"
[ -n "$input$dataset" ] || fail "give --input (NIfTI folder or phantoms:N) or --dataset (a packed dataset.h5)"
[ -z "$input" ] || [ -z "$dataset" ] || fail "--input and --dataset exclude each other"
eval_cfg=${eval_cfg:-$finetune_cfg}
for f in "$pretrain_cfg" "$finetune_cfg" "$eval_cfg"; do
  [ -r "$f" ] || fail "job config '$f' not found"
done
[[ $folds =~ ^[1-9][0-9]*$ ]] || fail "--folds '$folds' is not a positive integer"
[ "$folds" -ge 2 ] || fail "--folds $folds: fine-tuning validates on one fold and trains on the" \
  "others, so it needs 2 folds at the least"
[[ $nodes =~ ^[1-9][0-9]*$ ]] || fail "--nodes '$nodes' is not a positive integer"
[[ $gpus_per_node =~ ^[1-9][0-9]*$ ]] || fail "--gpus-per-node '$gpus_per_node' is not a positive integer"
[ "$dry_run" = 1 ] || command -v sbatch >/dev/null ||
  fail "sbatch not found: run this on a Slurm login node"

# A packed data set fixes the folds: fine-tuning trains the folds it has, and infer/eval would
# score only the cases of the folds trained. Adopt its count, or refuse a different --folds.
if [ -n "$dataset" ]; then
  [ -r "$dataset" ] || fail "--dataset $dataset: not found or not readable"
  if command -v h5dump >/dev/null; then
    # || true: h5dump fails on a file without the attribute, which the next line reports
    packed=$(h5dump -a /num_folds "$dataset" 2>/dev/null | sed -n 's/^ *(0): \([0-9]*\)$/\1/p') ||
      true
    [ -n "$packed" ] ||
      fail "--dataset $dataset: no num_folds attribute (not a data set from alice pack?)"
    if [ -z "$folds_given" ]; then
      folds=$packed
      echo "folds: $folds (from $dataset)" >&2
    elif [ "$folds" != "$packed" ]; then
      fail "--folds $folds, but $dataset was packed with num_folds = $packed: fine-tuning and" \
        "inference would cover only part of its cases; drop --folds, or repack with" \
        "num_folds=$folds"
    fi
  else
    echo "warning: h5dump not found, so --folds $folds is not checked against $dataset" >&2
  fi
fi

# A dry run writes nothing: no folders, and no jobs.txt over a real chain's record.
if [ "$dry_run" = 1 ]; then
  run_dir=$(realpath -m "$run_dir")
else
  mkdir -p "$run_dir/logs" "$run_dir/data"
  run_dir=$(cd "$run_dir" && pwd)
fi
dataset_given=$dataset   # a packed data set the user gave (its labels can be eval's truth)
dataset=${dataset:-$run_dir/data/dataset.h5}
jobs_file=$run_dir/jobs.txt
# A chain already in the queue for this run directory: a second one would write the same
# checkpoints and outputs at the same time.
if [ "$dry_run" = 0 ] && [ -s "$jobs_file" ] && command -v squeue >/dev/null; then
  live=""
  while read -r stage id; do
    [[ $id =~ ^[0-9]+$ ]] || continue
    [ -n "$(squeue -h -j "$id" -o %i 2>/dev/null)" ] && live="$live $stage=$id"
  done <"$jobs_file"
  [ -z "$live" ] || fail "$jobs_file lists jobs still in the queue:$live; a second chain would" \
    "write into the same run directory: scancel them first, or give another --run-dir"
fi
pack_words=() pretrain_words=() finetune_words=() infer_words=() eval_words=()
split_words pack_words "$pack_args"
split_words pretrain_words "$pretrain_args"
split_words finetune_words "$finetune_args"
split_words infer_words "$infer_args"
split_words eval_words "$eval_args"
# keys the chain sets for a stage: given again there, the stage's last value would win and part
# the stages (num_folds=3 packed 3 folds while 5 fine-tuning tasks ran; fold= or run_dir= sent
# several folds' runs into one)
owned() {  # option, "keys", words...
  local option=$1 word
  word=$(alice_owned_word "$2" "${@:3}") || return 0
  local key=${word#--}
  fail "$option '$word': the chain sets ${key%%=*} itself (--folds N for the folds, --run-dir" \
    "for the directories, --input or --dataset for the data); remove it"
}
owned --pack-args "num_folds" ${pack_words[@]+"${pack_words[@]}"}
owned --pretrain-args "run_dir data" ${pretrain_words[@]+"${pretrain_words[@]}"}
owned --finetune-args "run_dir fold num_folds data" ${finetune_words[@]+"${finetune_words[@]}"}
# infer.sbatch sets the checkpoint, the fold's cases and the folder; the chain the data set:
# --cases all made every fold's model predict the cases it trained on
owned --infer-args "cases data out checkpoint" ${infer_words[@]+"${infer_words[@]}"}

# --eval-args naming its own truth (--data or --labels) takes no automatic one: alice eval
# refuses two sources of truth, which would only show after the whole chain had run.
own_truth=0 own_label_set=0
for word in ${eval_words[@]+"${eval_words[@]}"}; do
  case $word in
    --data|--labels) own_truth=1 ;;
    label_set=*) own_label_set=1 ;;
  esac
done
if [ -z "$labels" ] && [ "$own_truth" = 0 ]; then
  case $input in
    phantoms:*) labels=$run_dir/data/phantoms/labelsTr ;;
    ?*) for d in "$input/../labelsTr" "$input/labelsTr"; do
          [ -z "$labels" ] && [ -d "$d" ] && labels=$(cd "$d" && pwd)
        done ;;
  esac
fi
[ -n "$labels" ] && [ "$own_truth" = 1 ] &&
  fail "give the ground truth once: --labels DIR or --eval-args \"--data/--labels ...\", not both"
# Every fold needs a labelled case: alice finetune refuses a fold without one, which would show
# only after the whole pre-training (alice pack deals the folds over the cases and warns).
labelled=
case $input in
  phantoms:*) labelled=${input#phantoms:} ;;
  ?*) [ -n "$labels" ] && [ -d "$labels" ] &&
        labelled=$(find "$labels" -maxdepth 1 \( -name '*.nii.gz' -o -name '*.nii' \) | wc -l) ;;
esac
if [[ $labelled =~ ^[0-9]+$ ]] && [ "$labelled" -gt 0 ] && [ "$labelled" -lt "$folds" ]; then
  # alice pack deals the labelled cases round the folds first: exactly folds 0..labelled-1 fill
  fix="give --folds $labelled, or more labelled cases"
  [ "$labelled" -ge 2 ] || fix="fine-tuning needs 2 labelled cases at the least: add labelled cases"
  fail "--input $input holds $labelled labelled case(s) for $folds folds:" \
    "folds $labelled-$((folds - 1)) would hold none, and their fine-tuning would fail after the whole pre-training; $fix"
fi
eval_truth=()
[ -n "$labels" ] && eval_truth=(--labels "$labels")
# --dataset without --labels: the data set's own labels (alice eval --data scores against
# each case's source label recorded at packing, or the packed one), passed as one word, so a
# path with spaces survives
if [ -z "$labels" ] && [ "$own_truth" = 0 ] && [ -n "$dataset_given" ]; then
  eval_truth=(--data "$dataset")
  own_truth=1
fi
# The phantoms number their organs FLARE's way (1 = liver): scored with the FLARE organ names
# and tolerances whatever label set the evaluation's job file names (finetune_btcv.cfg: btcv),
# unless --eval-args chooses one.
[[ $input == phantoms:* ]] && [ "$own_label_set" = 0 ] &&
  eval_truth+=(label_set=flare)
[ -n "$labels" ] || [ "$own_truth" = 1 ] ||
  fail "eval needs ground truth: give --labels DIR or --eval-args \"--data <dataset.h5>\""

# The job files as they are at submission (after every check above, so a refused chain copies
# nothing): every stage reads copies in RUN_DIR/jobs/, so editing
# jobs/*.cfg while the chain waits cannot give the folds of one cross-validation different
# settings (each array task starts when a GPU frees up), nor change the evaluation.
# freeze_config FILE NAME: prints the copy's path (a dry run writes nothing: FILE itself).
freeze_config() {
  if [ "$dry_run" = 1 ]; then echo "$1"; return 0; fi
  mkdir -p "$run_dir/jobs" && cp "$1" "$run_dir/jobs/$2.tmp.$$" &&
    mv "$run_dir/jobs/$2.tmp.$$" "$run_dir/jobs/$2" ||
    { echo "chain.sh: error: cannot copy the job file '$1' into $run_dir/jobs" >&2; return 2; }
  echo "$run_dir/jobs/$2"
}
# stage_overlays STAGE COPY WORD...: alice_map_overlays (slurm/overlays.sh) over one stage's
# arguments, the stage named in its refusals; the result in alice_args.
_overlay_stage=""
stage_overlays() {
  _overlay_stage=$1
  local copy_fn=$2 rc=0
  shift 2
  alice_map_overlays "$copy_fn" "$@" || rc=$?
  [ "$rc" != 3 ] || fail "--config needs a job file after it (in the $_overlay_stage arguments)"
  [ "$rc" = 0 ] || exit 2
}
_check_overlay() {   # every overlay readable before anything is copied: a missing one
  [ -r "$1" ] ||     # refuses the chain whole
    fail "job file '$1' (--config in the $_overlay_stage arguments) not found"
  echo "$1"
}
_freeze_overlay() { freeze_config "$1" "${_overlay_stage}_overlay$2.cfg"; }
check_overlays() { stage_overlays "$1" _check_overlay "${@:2}"; }
# freeze_overlays STAGE WORD...: sets frozen to the WORDs with each overlay job file
# (`--config FILE`, `-c FILE`, `--config=FILE`) replaced by its copy STAGE_overlay<k>.cfg.
freeze_overlays() {
  stage_overlays "$1" _freeze_overlay "${@:2}"
  frozen=(${alice_args[@]+"${alice_args[@]}"})
}
check_overlays pack ${pack_words[@]+"${pack_words[@]}"}
check_overlays pretrain ${pretrain_words[@]+"${pretrain_words[@]}"}
check_overlays finetune ${finetune_words[@]+"${finetune_words[@]}"}
check_overlays eval ${eval_words[@]+"${eval_words[@]}"}
pretrain_cfg=$(freeze_config "$pretrain_cfg" pretrain.cfg) || exit 2
finetune_cfg=$(freeze_config "$finetune_cfg" finetune.cfg) || exit 2
eval_cfg=$(freeze_config "$eval_cfg" eval.cfg) || exit 2
freeze_overlays pretrain ${pretrain_words[@]+"${pretrain_words[@]}"}
pretrain_words=(${frozen[@]+"${frozen[@]}"})
freeze_overlays finetune ${finetune_words[@]+"${finetune_words[@]}"}
finetune_words=(${frozen[@]+"${frozen[@]}"})
freeze_overlays eval ${eval_words[@]+"${eval_words[@]}"}
eval_words=(${frozen[@]+"${frozen[@]}"})
freeze_overlays pack ${pack_words[@]+"${pack_words[@]}"}
pack_words=(${frozen[@]+"${frozen[@]}"})

# bash < 4.4 (slurm/common.sh): arrays that are never empty: common opts log array pack_opts
# pretrain_opts; every other one is expanded as ${a[@]+"${a[@]}"}.
common=(--parsable --kill-on-invalid-dep=yes --hold)
[ -n "$partition" ] && common+=(--partition="$partition")
[ -n "$account" ] && common+=(--account="$account")
[ -n "$mem_per_cpu" ] && common+=(--mem-per-cpu="$mem_per_cpu")
[ -n "${ALICE_SBATCH_OPTS:-}" ] && read -r -a extra <<<"$ALICE_SBATCH_OPTS" &&
  common+=(${extra[@]+"${extra[@]}"})
cpus=(); [ -n "$cpus_per_task" ] && cpus=(--cpus-per-task="$cpus_per_task")
gpu=(); [ "${ALICE_GPUS:-1}" = 0 ] && gpu=(--gpus-per-task=0)
gpu_cpus=(${gpu[@]+"${gpu[@]}"} ${cpus[@]+"${cpus[@]}"})   # the GPU stages' options

# submit NAME DEPENDENCY SBATCH-OPTIONS... -- SCRIPT ARGS...: prints the job id.
# Logs: <run_dir>/logs/<job name>-<job id>.out (arrays: -<array id>_<task>.out).
log=(--output="$run_dir/logs/%x-%j.out")
submit() {
  local stage=$1 dep=$2; shift 2
  local opts=("${common[@]}")
  [ -n "$dep" ] && opts+=(--dependency="$dep")
  while [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  if [ "$dry_run" = 1 ]; then
    printf '%q ' sbatch "${opts[@]}" "$@" >&2   # quoted: each word shows as one
    echo >&2
    echo "DRY-$stage"
  else
    sbatch "${opts[@]}" "$@" | cut -d';' -f1
  fi
}

last_fold=$((folds - 1))
[ "$dry_run" = 1 ] && jobs_file=/dev/null || : >"$jobs_file"
submitted=""   # the held job ids so far, space-separated
record() { echo "$1 $2" | tee -a "$jobs_file"; submitted="$submitted $2"; }
# A failed submission (set -e ends the script) cancels the held jobs submitted before it.
cancel_submitted() {
  local rc=$?
  [ "$rc" -ne 0 ] && [ "$dry_run" = 0 ] && [ -n "$submitted" ] || return 0
  echo "chain.sh: a submission failed; cancelling the held jobs$submitted" >&2
  # shellcheck disable=SC2086
  scancel $submitted || echo "chain.sh: scancel failed: cancel$submitted by hand" >&2
  echo "# cancelled: a later submission of this chain failed" >>"$jobs_file"
}
trap cancel_submitted EXIT

{
  dep=""
  if [ -n "$input" ]; then
    pack_opts=("${log[@]}" ${cpus[@]+"${cpus[@]}"})
    [ -n "$pack_tasks" ] && pack_opts+=(--ntasks-per-node="$pack_tasks")
    pack_id=$(submit pack "" "${pack_opts[@]}" -- "$here/pack.sbatch" "$input" "$dataset" \
      num_folds="$folds" ${pack_words[@]+"${pack_words[@]}"})
    record pack "$pack_id"
    dep=afterok:$pack_id
  fi
  pretrain_opts=("${log[@]}" --nodes="$nodes" --ntasks-per-node="$gpus_per_node"
                 ${gpu_cpus[@]+"${gpu_cpus[@]}"})
  [ -n "$time_pretrain" ] && pretrain_opts+=(--time="$time_pretrain")
  pretrain_id=$(submit pretrain "$dep" "${pretrain_opts[@]}" -- \
    "$here/pretrain.sbatch" "$pretrain_cfg" "$run_dir/pretrain" data="$dataset" \
    ${pretrain_words[@]+"${pretrain_words[@]}"})
  record pretrain "$pretrain_id"

  array=(--array=0-"$last_fold" --output="$run_dir/logs/%x-%A_%a.out")
  finetune_id=$(submit finetune "afterok:$pretrain_id" "${array[@]}" \
    ${gpu_cpus[@]+"${gpu_cpus[@]}"} --export=ALL,ALICE_PRETRAIN_DIR="$run_dir/pretrain" -- \
    "$here/finetune.sbatch" "$finetune_cfg" "$run_dir/finetune" data="$dataset" num_folds="$folds" \
    ${finetune_words[@]+"${finetune_words[@]}"})
  record finetune "$finetune_id"

  # aftercorr: infer fold k starts when fine-tuning fold k has succeeded.
  infer_id=$(submit infer "aftercorr:$finetune_id" "${array[@]}" \
    ${gpu_cpus[@]+"${gpu_cpus[@]}"} -- \
    "$here/infer.sbatch" "$run_dir/finetune" "$run_dir/predictions" --data "$dataset" \
    ${infer_words[@]+"${infer_words[@]}"})
  record infer "$infer_id"

  eval_id=$(submit eval "afterok:$infer_id" "${log[@]}" ${cpus[@]+"${cpus[@]}"} -- \
    "$here/eval.sbatch" "$eval_cfg" "$run_dir/predictions" "$run_dir/eval" \
    ${eval_truth[@]+"${eval_truth[@]}"} \
    ${eval_words[@]+"${eval_words[@]}"})
  record eval "$eval_id"
}
if [ "$dry_run" = 1 ]; then
  echo "scontrol release <the job ids>" >&2
  echo "dry run: nothing submitted, nothing written" >&2
else
  # shellcheck disable=SC2086
  scontrol release $(echo $submitted | tr ' ' ,) ||
    fail "scontrol release failed; the chain's jobs$submitted are held: release or cancel them"
  submitted=""   # released: from here on they are the chain, not leftovers to cancel
  echo "chain submitted; job ids in $jobs_file, logs in $run_dir/logs/ (squeue -u $(id -un) to follow)" >&2
fi
