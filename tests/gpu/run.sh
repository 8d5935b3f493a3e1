#!/usr/bin/env bash
# GPU check in one short session (at most ~8 minutes on one H100/H200, the lent device is a
# bare image we do not control):
#   tests/gpu/run.sh LOGDIR
# sets the machine up (scripts/device_setup.sh: Open MPI, parallel HDF5, OpenBLAS, niftilib
# from the carried .devdeps when missing; cuDNN/NCCL from wherever the image keeps them),
# builds for the card (sm_90 on Hopper) only what the checks need, then runs, decisive checks
# first: CPU-vs-GPU parity of every op, a full step of each model, device = cuda end to end,
# the kernel profile of the paper step (CUPTI: PACK_DIR/kernel_profile.txt),
# the paper-configuration step in bf16 beside the same step in PyTorch eager bf16 (and issue
# 6's targets from them); then the all-reduce checks, GPU crops, the op benchmarks, fused
# attention, training from a data set; the extras last (loader bench, GPU cache churn, overlap
# bench, fp32/tf32 steps, PyTorch eager fp32, torch.compile). The list, with logs and what each
# asserts: tests/gpu/README.md. One log per check under LOGDIR; a summary table printed last
# -- also when a check fails or time runs out. Exit 0 when every check that ran passed
# (performance targets are reported as ok/miss and do not change the exit status).
#
# Environment:
#   BUILD/BIN     build and binary folders (default build-gpu/bin-gpu)
#   JOBS          make -j (default: number of cores); BUILD_TIMEOUT_S (300) the build's limit
#   BUDGET_S      wall-clock budget of the whole script in seconds (default 480); each check
#                 gets min(its own timeout, what is left), and is skipped when too little is
#   PACK_DIR      where to put gpu_summary.txt, gpu_logs.tar.gz and kernel_profile.txt (for the
#                 lent machine's $OUT, which returns at most 8 files); default LOGDIR
#   PEAK_TFLOPS   dense bf16 peak of the card for MFU (default from the card's name)
#   PYTHON        Python with numpy/h5py for the reference scripts (default: /usr/bin/python3
#                 or python3, the first that has them); TORCH_PYTHON: the one with a CUDA
#                 PyTorch (default: PYTHON, python3, /usr/bin/python3, the first that has it)
#   CUDA_ARCH     nvcc target (default from nvidia-smi's compute capability, else sm_90)
#   DEVICE_STAGE  device_setup.sh's staging folder (default /tmp/alice-devdeps)
#   SKIP_CHECKS   extended regex: checks whose name matches are listed as skipped, not run
#                 (e.g. SKIP_CHECKS='compile|overlap' to save device time on a rerun)
set -u
LOGDIR=${1:?usage: tests/gpu/run.sh LOGDIR}
mkdir -p "$LOGDIR" && LOGDIR=$(cd "$LOGDIR" && pwd)
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-gpu}
BIN=${BIN:-bin-gpu}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 16)}
BUDGET_S=${BUDGET_S:-480}
PACK_DIR=${PACK_DIR:-$LOGDIR}
mkdir -p "$PACK_DIR" && PACK_DIR=$(cd "$PACK_DIR" && pwd)
export BUILD BIN PYTHONUNBUFFERED=1
t_start=$SECONDS

# ---------------------------------------------------------------------------------------
# Bookkeeping: rows of the summary table, the time budget, the summary written last.
# ---------------------------------------------------------------------------------------
rows=()
failed=0
missed=0
record() {  # record CHECK STATUS(ok|FAIL|skip|miss) DETAIL
  rows+=("$(printf '%-34s %-5s %s' "$1" "$2" "$3")")
  [ "$2" = FAIL ] && failed=1
  [ "$2" = miss ] && missed=$((missed + 1))
  summary > "$PACK_DIR/gpu_summary.txt"   # kept current: a killed run still returns it
}
summary() {
  echo
  echo "== GPU summary ($(( SECONDS - t_start )) s of ${BUDGET_S} s budget, logs in $LOGDIR)"
  printf '%-34s %-5s %s\n' check status detail
  local r; for r in "${rows[@]}"; do echo "$r"; done
  echo "== $( [ $failed = 0 ] && echo 'every check that ran passed' || echo 'SOME CHECKS FAILED' );" \
       "performance targets missed: $missed"
}
finish() {
  trap - EXIT INT TERM
  [ -n "${DATA_DIR:-}" ] && rm -rf "$DATA_DIR"   # the phantom data set and its runs' checkpoints
  summary | tee "$PACK_DIR/gpu_summary.txt"
  # All logs in one file (the lent machine returns at most 8 files from $OUT).
  # Only files under 2 MiB: the machine returns none over 16 MiB, and data sets or
  # checkpoints dropped into LOGDIR by some check must not make the logs miss the trip.
  (cd "$(dirname "$LOGDIR")" && find "$(basename "$LOGDIR")" -type f -size -2048k \
     ! -name 'gpu_logs.tar.gz*' | tar -czf "$PACK_DIR/gpu_logs.tar.gz.tmp" -T -) 2>/dev/null &&
    mv "$PACK_DIR/gpu_logs.tar.gz.tmp" "$PACK_DIR/gpu_logs.tar.gz"
  exit $failed
}
interrupted() { record "run.sh" FAIL "interrupted by a signal after $(( SECONDS - t_start )) s"; finish; }
trap finish EXIT
trap interrupted INT TERM

left_s() { echo $(( BUDGET_S - (SECONDS - t_start) )); }
# step_timeout WANT: the timeout a check gets, or nothing (status 1) when under 20 s is left.
# 10 s stay in reserve for the summary and the log archive.
step_timeout() {
  local t=$(( $(left_s) - 10 ))
  [ "$t" -gt "$1" ] && t=$1
  [ "$t" -ge 20 ] || return 1
  echo "$t"
}
# timed CHECK WANT LOG cmd...: run under the budget; status 124 = timed out, 125 = no time.
timed() {
  local check=$1 want=$2 log=$3 t; shift 3
  if [ -n "${SKIP_CHECKS:-}" ] && [[ $check =~ $SKIP_CHECKS ]]; then
    record "$check" skip "not run: matches SKIP_CHECKS"; return 125
  fi
  if ! t=$(step_timeout "$want"); then
    record "$check" skip "not run: time budget spent ($(left_s) s left)"; return 125
  fi
  echo "+ timeout $t $*" > "$log"
  timeout --kill-after=5 "$t" "$@" >> "$log" 2>&1
}
# built PATH: the program exists (its source may not be in this tree yet): else a FAIL row.
built() { [ -x "$2" ] || { record "$1" FAIL "$2 was not built (source missing from this tree?)"; return 1; }; }
abs_path() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
first_line() { grep -m1 -E "$1" "$2" 2>/dev/null | cut -c1-100; }

# ---------------------------------------------------------------------------------------
# Device, image and machine setup
# ---------------------------------------------------------------------------------------
{
  nvidia-smi 2>&1
  echo "== image"; cat /etc/os-release 2>/dev/null | head -3; uname -a
  echo "== tools"; for t in gcc g++ make mpicc mpirun pkg-config nvcc python3 dpkg-deb ar ldconfig; do
    printf '%-10s %s\n' "$t" "$(command -v "$t" || echo MISSING)"; done
  echo "== cores: $(nproc 2>/dev/null)"
} > "$LOGDIR/device.txt" 2>&1
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
record device "$([ -n "$card" ] && echo ok || echo FAIL)" "${card:-no GPU visible (nvidia-smi)}"
if [ -z "${PEAK_TFLOPS:-}" ]; then
  case "$card" in
    *H200*|*"H100 80GB HBM3"*|*H100*SXM*) PEAK_TFLOPS=989 ;;  # dense bf16, SXM
    *H100*NVL*) PEAK_TFLOPS=835 ;;
    *H100*PCIe*) PEAK_TFLOPS=756 ;;
    *) PEAK_TFLOPS=989 ;;
  esac
fi
if [ -z "${CUDA_ARCH:-}" ]; then
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  CUDA_ARCH=sm_${cc:-90}
fi

# Open MPI, HDF5, OpenBLAS, niftilib from .devdeps where the image lacks them; cuDNN/NCCL
# from the image (pip wheels included). Its exports go into this shell.
t0=$SECONDS
if timed "setup (scripts/device_setup.sh)" 240 "$LOGDIR/setup.log" \
     bash scripts/device_setup.sh --env-file "$LOGDIR/device_env.sh" --stage "${DEVICE_STAGE:-/tmp/alice-devdeps}"; then
  # shellcheck disable=SC1091
  . "$LOGDIR/device_env.sh"
  record "setup (scripts/device_setup.sh)" ok \
    "$(grep -q 'files to install' "$LOGDIR/setup.log" && echo 'bundle installed' || echo 'bundle not needed'); $(( SECONDS - t0 )) s"
else
  rc=$?
  [ $rc = 125 ] || record "setup (scripts/device_setup.sh)" FAIL \
    "exit $rc: $(first_line 'ERROR' "$LOGDIR/setup.log" | sed 's/^device_setup: //')"
  failed=1; exit 1
fi

# Python: numpy/h5py for the reference scripts, a CUDA PyTorch for the comparison.
if [ -z "${PYTHON:-}" ]; then
  for p in /usr/bin/python3 python3; do
    "$p" -c 'import numpy, h5py' >/dev/null 2>&1 && { PYTHON=$(command -v "$p"); break; }
  done
fi
PYTHON=${PYTHON:-python3}
if [ -z "${TORCH_PYTHON:-}" ]; then
  for p in "$PYTHON" python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
    "$p" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1 &&
      { TORCH_PYTHON=$(command -v "$p"); break; }
  done
fi
TORCH_PYTHON=${TORCH_PYTHON:-}
export PYTHON
echo "PYTHON=$PYTHON TORCH_PYTHON=${TORCH_PYTHON:-none}" >> "$LOGDIR/device.txt"

# ---------------------------------------------------------------------------------------
# Build: only the targets the checks below need (a section adding a check adds its target
# here; targets whose source is not in this tree are left out instead of failing the build).
# ---------------------------------------------------------------------------------------
GPU_TARGETS=("$BIN/alice"
             "$BUILD/tests/test_backend_parity"
             "$BUILD/tests/test_step_parity_gpu"
             "$BUILD/tools/nccl_allreduce_check"
             "$BUILD/tools/nccl_overlap_check"
             "$BUILD/tests/bench_cuda_ops"
             "$BUILD/tests/bench_cuda_elementwise"
             "$BUILD/tests/bench_recon_rows"
             "$BUILD/tests/bench_adamw"
             "$BUILD/tests/bench_colsum"
             "$BUILD/tests/bench_residual_fusion"
             "$BUILD/tests/bench_linear_gelu_bwd"
             "$BUILD/tests/bench_qkv_grad16"
             "$BUILD/tests/bench_instnorm"
             "$BUILD/tests/test_gpu_crops"
             "$BUILD/tools/nccl_watchdog_check"
             "$BUILD/tests/test_cuda_graph_step"
             "$BUILD/tests/test_gemm_autotune_gpu"
             "$BUILD/tests/test_conv_autotune_gpu"
             "$BUILD/tests/bench_loader")
build_targets=()
for t in "${GPU_TARGETS[@]}"; do
  case $t in
    "$BUILD"/tests/bench_*) src=tests/bench/${t##*/}.c ;;
    "$BUILD"/tests/*) src=tests/unit/${t##*/}.c ;;
    "$BUILD"/tools/*) src=tests/tools/${t##*/}.c ;;
    *) src=src/main.c ;;
  esac
  if [ -e "$src" ]; then build_targets+=("$t"); else echo "not in this tree: $src" >> "$LOGDIR/device.txt"; fi
done
t0=$SECONDS
if timed "build $CUDA_ARCH" "${BUILD_TIMEOUT_S:-300}" "$LOGDIR/build.log" \
     make USE_CUDA=1 CUDA_ARCH="$CUDA_ARCH" BUILD="$BUILD" BIN="$BIN" -j"$JOBS" "${build_targets[@]}"; then
  record "build $CUDA_ARCH" ok "${#build_targets[@]} targets, $(( SECONDS - t0 )) s, -j$JOBS"
else
  rc=$?
  [ $rc = 125 ] || record "build $CUDA_ARCH" FAIL \
    "exit $rc (build.log): $(first_line '[Ee]rror|No rule|undefined reference' "$LOGDIR/build.log")"
  failed=1; exit 1
fi
# The CUPTI kernel profiler (an injection library, scripts/kernel_profile.sh): built on its
# own, so that an image without CUPTI only skips its row.
kprof="kernel profile alice bf16"
kprof_unetr="kernel profile unetr bf16"
kernel_profile_so="" kernel_profile_why=""
if [ -n "${SKIP_CHECKS:-}" ] && [[ $kprof =~ $SKIP_CHECKS ]] && [[ $kprof_unetr =~ $SKIP_CHECKS ]]; then
  kernel_profile_why="not built: its checks match SKIP_CHECKS"
elif [ ! -e cuda/profiler/kernel_profile.cpp ]; then
  kernel_profile_why="cuda/profiler/kernel_profile.cpp not in this tree"
elif timeout 120 make USE_CUDA=1 CUDA_ARCH="$CUDA_ARCH" BUILD="$BUILD" BIN="$BIN" kernel-profile \
       > "$LOGDIR/build_kernel_profile.log" 2>&1 && [ -f "$BUILD/lib/libalice_kernel_profile.so" ]; then
  kernel_profile_so=$(abs_path "$BUILD/lib/libalice_kernel_profile.so")
else
  kernel_profile_why="$(first_line 'CUPTI not found|[Ee]rror|No rule' "$LOGDIR/build_kernel_profile.log" || true) (build_kernel_profile.log)"
fi

# ---------------------------------------------------------------------------------------
# The checks, in the order that keeps the decisive results when the budget runs short:
#   1. correctness of the backend (op parity, step parity) and of device = cuda end to end;
#   2. the figures issue 6 is judged by: alice bf16 and PyTorch eager bf16 on the paper
#      configuration, and the two target rows computed from them at once;
#   3. the rest of the correctness checks (all-reduce, GPU crops, overlap on = off), the op
#      benchmarks, alice bf16 with fused attention, training from a data set;
#   4. the extras last: loader bench, the cache-churn run, the overlap bench, the fp32/tf32
#      steps, PyTorch eager fp32 and torch.compile (whose compilation alone takes minutes).
# Each check gets min(its own limit, what is left); checks past the budget are listed as
# skipped for time.
# ---------------------------------------------------------------------------------------
# ---- parity: every op, CPU vs GPU ----
t0=$SECONDS
rc=125
built "op parity (fp32/tf32/bf16)" "$BUILD/tests/test_backend_parity" &&
  { timed "op parity (fp32/tf32/bf16)" 120 "$LOGDIR/parity.log" "$BUILD/tests/test_backend_parity"; rc=$?; }
cases_ok=$(grep -sc '^  ok ' "$LOGDIR/parity.log"); cases_bad=$(grep -sc '^  FAIL ' "$LOGDIR/parity.log")
case $rc in
  125) ;;
  0) record "op parity (fp32/tf32/bf16)" ok "$cases_ok cases, $(( SECONDS - t0 )) s" ;;
  77) record "op parity (fp32/tf32/bf16)" FAIL "skipped: no GPU visible to the test" ;;
  124|137) record "op parity (fp32/tf32/bf16)" FAIL "timed out after $(( SECONDS - t0 )) s ($cases_ok ok so far)" ;;
  *) record "op parity (fp32/tf32/bf16)" FAIL "exit $rc, $cases_bad of $((cases_ok + cases_bad)) cases failed (parity.log)" ;;
esac

# ---- a full pre-training step (MAE, Alice, Alice without CASA), CPU vs GPU in fp32 ----
t0=$SECONDS
rc=125
built "step parity (loss, grads)" "$BUILD/tests/test_step_parity_gpu" &&
  { timed "step parity (loss, grads)" 90 "$LOGDIR/step_parity.log" "$BUILD/tests/test_step_parity_gpu"; rc=$?; }
case $rc in
  125) ;;
  0) record "step parity (loss, grads)" ok "mae, alice, alice-no-casa, unetr, alice-fused, alice-bf16 (gemm, fused, cudnn), alice-bf16 head width 32 (fused; auto: $(grep -o '[0-9]* cuDNN graphs built' "$LOGDIR/step_parity.log" | head -1)); $(( SECONDS - t0 )) s" ;;
  77) record "step parity (loss, grads)" FAIL "skipped: no GPU visible to the test" ;;
  *) record "step parity (loss, grads)" FAIL "exit $rc (step_parity.log): $(first_line FAIL "$LOGDIR/step_parity.log" || tail -1 "$LOGDIR/step_parity.log" | cut -c1-100)" ;;
esac

# ---- device = cuda end to end: pretrain -> cpu resume, finetune, infer on cuda and cpu, eval ----
rc=125
built "cuda end to end (pretrain/finetune/infer)" "$BIN/alice" &&
  { timed "cuda end to end (pretrain/finetune/infer)" 90 "$LOGDIR/cuda_e2e.log" \
      env ALICE="$(abs_path "$BIN/alice")" bash tests/gpu/test_cuda_end_to_end.sh; rc=$?; }
case $rc in
  125) ;;
  0) record "cuda end to end (pretrain/finetune/infer)" ok "$(grep -m1 '^summary: ' "$LOGDIR/cuda_e2e.log" | cut -c10-100)" ;;
  77) record "cuda end to end (pretrain/finetune/infer)" FAIL "skipped: $(grep -m1 skip "$LOGDIR/cuda_e2e.log" | sed 's/^skip: //' | cut -c1-80)" ;;
  *) record "cuda end to end (pretrain/finetune/infer)" FAIL "exit $rc (cuda_e2e.log): $(first_line 'FAIL|rror' "$LOGDIR/cuda_e2e.log")" ;;
esac

# ---- where the paper step's time goes: kernels by total time under CUPTI (no nsys) ----
# kernel_profile_row CHECK SUMMARY LOG alice-args...: the step under the injection library
# (scripts/kernel_profile.sh). The window is the 5 timed steps: last:5 finds the launch
# sequence repeating at the end, so the set-up and the warm-up step (cuBLAS/cuDNN choosing
# algorithms) are left out. SUMMARY (under PACK_DIR) comes back from the lent machine.
kernel_profile_row() {
  local check=$1 summary=$2 log=$3 rc=125 busy idle long top; shift 3
  if [ -z "$kernel_profile_so" ] && [ -n "${SKIP_CHECKS:-}" ] && [[ $check =~ $SKIP_CHECKS ]]; then
    record "$check" skip "not run: matches SKIP_CHECKS"
  elif [ -z "$kernel_profile_so" ]; then
    record "$check" skip "profiler not built: $kernel_profile_why"
  elif built "$check" "$BIN/alice"; then
    timed "$check" 120 "$log" env BUILD="$BUILD" KERNEL_PROFILE_SO="$kernel_profile_so" \
      ALICE_KERNEL_PROFILE_SKIP=last:5 bash scripts/kernel_profile.sh "$summary" "$BIN/alice" "$@" --bench-steps 5
    rc=$?
  fi
  case $rc in
    125) ;;
    0)
      busy=$(grep -o 'busy_pct=[0-9.]*' "$summary" 2>/dev/null | cut -d= -f2)
      idle=$(grep -o 'idle_ms=[0-9.]*' "$summary" 2>/dev/null | cut -d= -f2)
      long=$(grep -o 'gaps_over_20us_ms=[0-9.]*' "$summary" 2>/dev/null | cut -d= -f2)
      # the table's first 3 rows: rank calls total mean %kern cum% name (names hold spaces;
      # no {6} in the regex: mawk lacks interval expressions)
      top=$(awk '$1 ~ /^[1-3]$/ && NF >= 7 { n = $0; for (i = 0; i < 6; i++) sub(/^ *[^ ]+ +/, "", n); printf "%s%s %s%%", sep, substr(n, 1, 34), $5; sep = "; " }' \
            "$summary" 2>/dev/null)
      # last:5 found no repeated launch sequence: every kernel counted (set-up included)
      grep -q '^window .*no 5 repeats' "$summary" 2>/dev/null && top="$top; window: all kernels (no 5 repeats found)"
      if [ -n "$busy" ]; then
        record "$check" ok "busy ${busy}% of span${idle:+, idle $idle ms (${long:-?} in gaps >= 20 us)}; $top"
      else
        record "$check" FAIL "no summary in $(basename "$summary"): $(first_line 'alice kernel profile|kernel_profile.sh' "$log")"
      fi ;;
    *) record "$check" FAIL "exit $rc ($(basename "$log")): $(first_line '[Ee]rror|kernel profile:' "$log")" ;;
  esac
}
kernel_profile_row "$kprof" "$PACK_DIR/kernel_profile.txt" "$LOGDIR/kernel_profile.log" \
  pretrain --config jobs/pretrain_vitb_paper.cfg device=cuda batch=8 precision=bf16 tf32=1

# ---- paper configuration step (ViT-B/16, crop 192x192x64, batch 8, all views and losses) ----
# field NAME LOG: the last NAME=value of the machine-readable timing line.
field() { grep -o " $1=[0-9.]*" "$2" 2>/dev/null | tail -1 | cut -d= -f2; }
# The speed-up row of an opt-in autotune (gemm_autotune, conv_autotune): the tuned step beside
# the default one, with the figures of the tuner's end-of-run summary line ("WHAT autotune: ...
# plans_tuned= KEPT_FIELD= left_untuned= chosen_ms= BASE_FIELD="). A measurement, "ok" either
# way; FAIL only when the tuned step ran without tuning anything (no summary line).
# autotune_speedup_row ROW WHAT DEFAULT_STEP TUNED_STEP LOG KEPT_FIELD KEPT_WORDS TIMES_WORDS
#                      BASE_FIELD BASE_WORD
autotune_speedup_row() {
  local row=$1 what=$2 log=$5 kept_field=$6 kept_words=$7 times_words=$8 base_field=$9 base_word=${10}
  local u=${samples_per_s[$4]:-} d=${samples_per_s[$3]:-} m=${mfu[$3]:-?} e=${mfu[$4]:-?}
  summary_field() { grep "$what autotune: " "$log" 2>/dev/null | grep -o " $1=[0-9.]*" | tail -1 | cut -d= -f2; }
  local tuned kept untuned chosen base
  tuned=$(summary_field plans_tuned); kept=$(summary_field "$kept_field")
  untuned=$(summary_field left_untuned); chosen=$(summary_field chosen_ms); base=$(summary_field "$base_field")
  if [ -n "$u" ] && [ -z "$tuned" ]; then
    record "$row" FAIL "the step tuned nothing: no '$what autotune:' line in ${log##*/}"
  elif [ -n "$u" ] && [ -n "$d" ]; then
    record "$row" ok "$(awk -v u="$u" -v d="$d" -v m="$m" -v e="$e" -v w="$what" -v n="$tuned" \
      -v k="${kept:-0}" -v kw="$kept_words" -v l="${untuned:-0}" -v tw="$times_words" \
      -v c="$chosen" -v b="$base" -v bw="$base_word" \
      'BEGIN{printf "%.3fx samples/s with %s_autotune=1 (%s vs default %s; MFU %s%% vs %s%%); %d plans tuned, %d %s, %d untuned; %s: chosen %.3f ms vs %s %.3f ms (%.3fx)",
             u/d, w, u, d, e, m, n, k, kw, l, tw, c, bw, b, (c > 0) ? b/c : 1}')"
  else
    record "$row" skip "needs both steps (default ${d:-missing}, autotune ${u:-missing} samples/s)"
  fi
}
declare -A samples_per_s=()
# train_step MODEL LABEL LIMIT COMMAND CONFIG key=value...: the row "MODEL step LABEL" from
# `alice COMMAND --config CONFIG key=value... --bench-steps 5` (its alice_step line: median
# s/step, batch, GFLOP/step, GFLOP/s, GPU peak); log step_LABEL.log for the pre-training model
# (alice), MODEL_step_LABEL.log otherwise; samples_per_s and mfu keyed MODEL_LABEL.
train_step() {
  local model=$1 label=$2 limit=$3 command=$4 config=$5; shift 5
  local check="$model step $label" name="step_$label.log" rc
  [ "$model" = alice ] || name="${model}_$name"
  local log="$LOGDIR/$name"
  built "$check" "$BIN/alice" || return
  timed "$check" "$limit" "$log" "$BIN/alice" "$command" --config "$config" "$@" --bench-steps 5
  rc=$?
  [ $rc = 125 ] && return
  local s b gf gps mem
  s=$(field s_per_step "$log"); b=$(field batch "$log"); gf=$(field gflop_per_step "$log")
  gps=$(field gflops "$log"); mem=$(field gpu_peak_mb "$log")
  if [ $rc = 0 ] && [ -n "$s" ] && [ -n "$gps" ] && [ -n "$b" ]; then
    samples_per_s[${model}_$label]=$(awk -v s="$s" -v b="$b" 'BEGIN{printf "%.3f", b/s}')
    record "$check" ok "$(awk -v s="$s" -v b="$b" -v g="$gps" -v f="${gf:-0}" -v p="$PEAK_TFLOPS" -v m="${mem:-?}" \
      'BEGIN{printf "%.1f ms/step, %.1f samples/s, %.1f TFLOP/s, MFU %.1f%% of %d; %.0f GFLOP/step, floor %.1f ms; peak %s MB",
             1e3*s, b/s, g/1e3, 100*g/1e3/p, p, f, f/p, m}')"
    mfu[${model}_$label]=$(awk -v g="$gps" -v p="$PEAK_TFLOPS" 'BEGIN{printf "%.2f", 100*g/1e3/p}')
  elif [ $rc = 0 ]; then
    record "$check" FAIL "no timing line in $name"
  else
    record "$check" FAIL "exit $rc: $(first_line '[Ee]rror' "$log")"
  fi
}
# alice_step LABEL key=value...: the pre-training step of the paper configuration, batch 8
alice_step() { local label=$1; shift; train_step alice "$label" 150 pretrain jobs/pretrain_vitb_paper.cfg device=cuda batch=8 "$@"; }
declare -A mfu=()

# ---- the same step in PyTorch on the same card ----
torch_step() {  # torch_step LABEL AMP COMPILE WANT_S [more bench_torch_step.py flags]
  local label=$1 amp=$2 compile=$3 want=$4; shift 4
  local check="torch step $label" log="$LOGDIR/torch_$label.log" rc line
  if [ -z "$TORCH_PYTHON" ]; then record "$check" skip "no Python with a CUDA PyTorch (set TORCH_PYTHON)"; return; fi
  if ! grep -q -- '--compile' tests/reference/bench_torch_step.py; then
    record "$check" skip "tests/reference/bench_torch_step.py has no --device/--amp/--compile"; return; fi
  timed "$check" "$want" "$log" "$TORCH_PYTHON" tests/reference/bench_torch_step.py \
    --device cuda --amp "$amp" --compile "$compile" --batch 8 --steps 5 --warmup-steps 2 \
    --config jobs/pretrain_vitb_paper.cfg --peak-tflops "$PEAK_TFLOPS" "$@"
  rc=$?
  line=$(grep '^torch_step ' "$log" | tail -1)
  # Stopped by its timeout AFTER printing its timing (torch.compile's exit can outlast the
  # budget): the figures stand, and the row says what happened.
  local late=""
  if { [ $rc = 124 ] || [ $rc = 137 ]; } && [[ $line == *s_per_step=* ]]; then
    rc=0; late="; stopped by its timeout after printing this"
  fi
  case $rc in
    125) ;;
    0)
      local s sps gps gf mem
      s=$(field s_per_step <(echo " $line")); sps=$(field samples_per_s <(echo " $line"))
      gps=$(field gflops <(echo " $line")); gf=$(field gflop_per_step <(echo " $line"))
      mem=$(field peak_mem_mb <(echo " $line"))
      if [ -n "$s" ] && [ -n "$gps" ]; then
        samples_per_s[torch_$label]=$sps
        record "$check" ok "$(awk -v s="$s" -v n="$sps" -v g="$gps" -v f="${gf:-0}" -v p="$PEAK_TFLOPS" -v m="${mem:-?}" \
          'BEGIN{printf "%.1f ms/step, %.1f samples/s, %.1f TFLOP/s, MFU %.1f%% of %d; %.0f GFLOP/step; peak %s MB",
                 1e3*s, n, g/1e3, 100*g/1e3/p, p, f, m}')$late"
      else
        record "$check" FAIL "no torch_step timing line in torch_$label.log"
      fi ;;
    3) record "$check" skip "$(echo "$line" | grep -o 'reason=.*' | cut -c8-100)" ;;
    124|137) [ "$compile" = 1 ] && record "$check" skip "torch.compile did not finish within its timeout" \
               || record "$check" FAIL "timed out (torch_$label.log)" ;;
    *) [ "$compile" = 1 ] && record "$check" skip "torch.compile failed: exit $rc: $(first_line 'Error' "$log")" \
         || record "$check" FAIL "exit $rc: $(first_line 'Error|error' "$log")" ;;
  esac
}

# The math-mode keys reach the backend once the training code calls gpu_set_math.
math_modes=0
grep -rq 'gpu_set_math' src --include='*.c' --exclude='gpu_stub.c' && math_modes=1

# ---- the pair issue 6's targets compare, and the targets at once ----
# (the defaults: cuda_graph = auto and attention_kernel = auto, i.e. a CUDA graph of the step
# and cuDNN's attention; their speed-ups are measured below)
[ $math_modes = 1 ] && alice_step bf16 precision=bf16 tf32=1
# bf16 activations are new and unmeasured: if that step failed, the targets are taken from
# the step with fp32 activations (bf16 GEMM operands only) rather than not at all.
target_label=bf16
gemm_only_ran=0
if [ $math_modes = 1 ] && [ -z "${samples_per_s[alice_bf16]:-}" ] &&
   grep -q bf16_activations src/core/config_keys.c; then
  alice_step bf16-gemm-only precision=bf16 tf32=1 bf16_activations=0
  gemm_only_ran=1
  [ -n "${samples_per_s[alice_bf16-gemm-only]:-}" ] && target_label=bf16-gemm-only
fi
torch_step "eager bf16" bf16 0 150
# Targets of issue 6: alice bf16 at >= 45% MFU and >= 1.5x PyTorch eager bf16 throughput
a=${samples_per_s[alice_$target_label]:-}; t=${samples_per_s["torch_eager bf16"]:-}
if [ -n "$a" ] && [ -n "$t" ]; then
  ratio=$(awk -v a="$a" -v t="$t" 'BEGIN{printf "%.2f", a/t}')
  record "alice bf16 / torch eager bf16" "$(awk -v r="$ratio" 'BEGIN{print (r >= 1.5) ? "ok" : "miss"}')" \
    "${ratio}x throughput ($a vs $t samples/s; target >= 1.5x)$([ $target_label = bf16 ] || echo "; from alice step $target_label")"
else
  record "alice bf16 / torch eager bf16" skip "needs both rows (alice ${a:-missing}, torch ${t:-missing} samples/s)"
fi
m=${mfu[alice_$target_label]:-}
if [ -n "$m" ]; then
  record "alice bf16 MFU" "$(awk -v m="$m" 'BEGIN{print (m >= 45) ? "ok" : "miss"}')" \
    "${m}% of ${PEAK_TFLOPS} TFLOP/s dense bf16 (target >= 45%)$([ $target_label = bf16 ] || echo "; from alice step $target_label")"
else
  record "alice bf16 MFU" skip "no alice bf16 timing"
fi

# ---- the defaults against their alternatives, each measured in this run ----
# Row 8 (alice step bf16) runs the defaults: cuda_graph = auto records the step's forward +
# backward once as a CUDA graph and replays it (one rank; src/train/step_graph.c), and
# attention_kernel = auto runs cuDNN's fused attention at the bf16 head widths 32 and 64
# (src/ops/attention_choice.h). Each row below runs the step without one of them; the speed-up
# rows are default / alternative. A default that did not happen FAILs its row, quoting why: the
# graph never replayed (graph_replays=0: the recording failed and the step ran eagerly), or no
# cuDNN attention graph built (a build without the frontend headers, or every shape refused).
if [ $math_modes = 1 ] && grep -q 'cuda_graph, "auto"' src/core/config_keys.c; then
  alice_step bf16-eager precision=bf16 tf32=1 cuda_graph=0
  a=${samples_per_s[alice_bf16-eager]:-}; g=${samples_per_s[alice_bf16]:-}
  replays=$(field graph_replays "$LOGDIR/step_bf16.log")
  if [ -n "$g" ] && [ "${replays:-0}" = 0 ]; then
    # the warnings only (log_warn: "alice: warning: cuda_graph: ..."), not the info line
    # that says a recording was made
    why=$(first_line 'warning.*cuda_graph' "$LOGDIR/step_bf16.log")
    record "cuda graph step speed-up" FAIL "the default step's graph was not replayed: ${why:-no cuda_graph line in step_bf16.log}"
  elif [ -n "$a" ] && [ -n "$g" ]; then
    record "cuda graph step speed-up" ok "$(awk -v a="$a" -v g="$g" -v m="${mfu[alice_bf16]:-?}" -v e="${mfu[alice_bf16-eager]:-?}" \
      'BEGIN{printf "%.2fx samples/s with the graph (default %s vs %s with cuda_graph=0; MFU %s%% vs %s%%)", g/a, g, a, m, e}')"
  else
    record "cuda graph step speed-up" skip "needs both steps (default ${g:-missing}, eager ${a:-missing} samples/s)"
  fi
fi
if [ $math_modes = 1 ] && [ -f src/ops/attention_choice.h ]; then
  alice_step bf16-flash-attention precision=bf16 tf32=1 attention_kernel=fused
  f=${samples_per_s[alice_bf16-flash-attention]:-}; c=${samples_per_s[alice_bf16]:-}
  cudnn_graphs=$(grep -c '^cuDNN attention: .* graph .* built' "$LOGDIR/step_bf16.log" 2>/dev/null)
  if [ -n "$c" ] && [ "${cudnn_graphs:-0}" = 0 ]; then
    # cuDNN's refusal (a warning), else the math line saying what auto chose in this build
    why=$(first_line 'warning.*cuDNN' "$LOGDIR/step_bf16.log")
    why=${why:-$(first_line 'attention kernel' "$LOGDIR/step_bf16.log")}
    record "cudnn attention step speed-up" FAIL "the default step built no cuDNN attention graph: ${why:-no cuDNN line in step_bf16.log}"
  elif [ -n "$f" ] && grep -q '^cuDNN attention' "$LOGDIR/step_bf16-flash-attention.log"; then
    record "cudnn attention step speed-up" FAIL "attention_kernel=fused ran cuDNN's attention: $(first_line '^cuDNN attention' "$LOGDIR/step_bf16-flash-attention.log")"
  elif [ -n "$c" ] && [ -n "$f" ]; then
    record "cudnn attention step speed-up" ok "$(awk -v c="$c" -v f="$f" -v m="${mfu[alice_bf16]:-?}" -v e="${mfu[alice_bf16-flash-attention]:-?}" -v n="$cudnn_graphs" \
      'BEGIN{printf "%.2fx samples/s with cuDNN attention (default %s vs %s with attention_kernel=fused; MFU %s%% vs %s%%; %d cuDNN graphs)", c/f, c, f, m, e, n}')"
  else
    record "cudnn attention step speed-up" skip "needs both steps (default ${c:-missing}, flash ${f:-missing} samples/s)"
  fi
fi
# step_ratio_row ROW ALT WHAT AWK_PRINTF: a row comparing the default step (alice_bf16) with
# the step alice_ALT in the same run, "ok" with AWK_PRINTF (an awk printf statement over d and
# a, the two steps' samples/s, and m and n, their MFU), or a skip naming WHAT when one of the
# steps is missing. A measurement either way.
step_ratio_row() {
  local row=$1 alt=$2 what=$3 printf_stmt=$4
  local a=${samples_per_s[alice_$alt]:-} d=${samples_per_s[alice_bf16]:-}
  if [ -n "$a" ] && [ -n "$d" ]; then
    record "$row" ok "$(awk -v d="$d" -v a="$a" -v m="${mfu[alice_bf16]:-?}" \
      -v n="${mfu[alice_$alt]:-?}" "BEGIN{$printf_stmt}")"
  else
    record "$row" skip "needs both steps (default ${d:-missing}, $what ${a:-missing} samples/s)"
  fi
}
# bf16_branch_out (the default since session 25): the attention projections and fc2 store
# their outputs in bf16 (PyTorch autocast's rounding) and the LayerNorm after each adds them to
# the fp32 residual stream in its pass. Beside it, bf16_branch_out = 0: cuBLASLt adds the
# residual in an fp32 store (those GEMMs ran at 124-290 TFLOP/s in run 18). A measurement, "ok"
# either way.
if [ $math_modes = 1 ] && grep -q bf16_branch_out src/core/config_keys.c; then
  alice_step bf16-fp32-branches precision=bf16 tf32=1 bf16_branch_out=0
  step_ratio_row "bf16 branch step speed-up" bf16-fp32-branches "fp32 branches" \
    'printf "%.3fx samples/s with the bf16 branches (default %s vs %s with bf16_branch_out=0; MFU %s%% vs %s%%)", d/a, d, a, m, n'
fi
# The teacher through the whole EMA decoder (teacher_decoder = full, the default since session
# 12) beside the decoder_embed-only teacher that runs 1-10 timed: what the fidelity fix costs,
# in the same run (each step's MFU over its own FLOP count).
if [ $math_modes = 1 ] && grep -q teacher_decoder src/core/config_keys.c; then
  alice_step bf16-embed-teacher precision=bf16 tf32=1 teacher_decoder=embed
  step_ratio_row "full teacher step cost" bf16-embed-teacher embed \
    'printf "%.2fx the embed teacher'"'"'s samples/s (default %s vs %s with teacher_decoder=embed; MFU %s%% vs %s%%)", d/a, d, a, m, n'
fi
# CASA's keys and values from the decoder features (casa_kv = features, session 18: the form of
# DESIGN.md's equations; H stays fp32 under bf16) beside the default heads' outputs: what the
# paper's form costs per step, in the same run. A measurement, "ok" either way.
if [ $math_modes = 1 ] && grep -q casa_kv src/core/config_keys.c; then
  alice_step bf16-casa-features precision=bf16 tf32=1 casa_kv=features
  step_ratio_row "casa_kv features step cost" bf16-casa-features features \
    'printf "%.3fx the default samples/s with casa_kv=features (%s vs %s; MFU %s%% vs %s%%)", a/d, a, d, n, m'
fi
# Gradient accumulation (accum_steps = 2 at batch 4: the same 8 samples per optimiser step in
# two micro-batches through one recorded step, half the activations): what half the batch per
# launch costs beside the default step, in the same run. A measurement, "ok" either way.
if [ $math_modes = 1 ] && grep -q accum_steps src/core/config_keys.c; then
  alice_step bf16-accum2 precision=bf16 tf32=1 batch=4 accum_steps=2
  step_ratio_row "accumulation step cost" bf16-accum2 accumulated \
    'printf "%.2fx the batch-8 samples/s with batch 4 x accum_steps 2 (%s vs %s; MFU %s%% vs %s%%)", a/d, a, d, n, m'
fi
# The opt-in cuBLASLt autotune (gemm_autotune = 1): every GEMM shape's heuristic candidates
# timed at its first (eager, warm-up step) call and the fastest kept. A measurement, "ok" either
# way; FAIL only when the step ran without tuning anything (no "gemm autotune:" line).
if [ $math_modes = 1 ] && grep -q gemm_autotune src/core/config_keys.c; then
  alice_step bf16-gemm-autotune precision=bf16 tf32=1 gemm_autotune=1
  autotune_speedup_row "gemm autotune step speed-up" gemm alice_bf16 alice_bf16-gemm-autotune \
    "$LOGDIR/step_bf16-gemm-autotune.log" kept_first "kept the first" "GEMMs once each" first_ms first
fi

# ---- the UNETR fine-tuning step (jobs/finetune_btcv.cfg: ViT-B/16, feature size 16, 96^3
# crops, batch 4, 14 classes; random crops and labels, src/train/finetune.c run_bench) ----
# The defaults (cuda_graph = auto: the step replayed as a graph; instnorm_kernel = own), then
# without the graph and with cuDNN's instance norm: convolutions and instance norms dominate
# this step, unlike the pre-training one. Measurements, "ok" whatever the speed.
# unetr_step LABEL key=value...
unetr_step() { local label=$1; shift; train_step unetr "$label" 90 finetune jobs/finetune_btcv.cfg device=cuda "$@"; }
if [ $math_modes = 1 ] && grep -q -- '--bench-steps' src/cli/cmd_finetune.c; then
  unetr_step bf16 precision=bf16 tf32=1
  unetr_step bf16-eager precision=bf16 tf32=1 cuda_graph=0
  unetr_step bf16-instnorm-cudnn precision=bf16 tf32=1 instnorm_kernel=cudnn
  # The weight gradients on channels-last copies (conv_wgrad_layout = ndhwc, session 10): cuDNN's
  # channels-last backward-filter kernels instead of the sm80 ones NCDHW tensors get (4 calls,
  # 12.2 ms per step in run 9). A shape cuDNN offers no channels-last algorithm for keeps NCDHW
  # (a "keeps the NCDHW weight gradient" line in the row's log).
  grep -q conv_wgrad_layout src/core/config_keys.c &&
    unetr_step bf16-wgrad-ndhwc precision=bf16 tf32=1 conv_wgrad_layout=ndhwc
  # The own kernels for the pointwise convolutions with few channels (pointwise_conv = own,
  # session 10): UNETR's three 1x1x1 convolutions at 96^3 without cuDNN's layout conversions,
  # gemv and bias add; then both session-10 options together.
  if grep -q pointwise_conv src/core/config_keys.c; then
    unetr_step bf16-pointwise-own precision=bf16 tf32=1 pointwise_conv=own
    unetr_step bf16-ndhwc-pointwise precision=bf16 tf32=1 conv_wgrad_layout=ndhwc pointwise_conv=own
  fi
  # The own weight gradient of the 3x3x3 convolutions with few channels (conv_wgrad_kernel =
  # own, the default since session 19: 1.057x in run 13): UNETR's four full-resolution 3x3x3
  # backward-filters as fp32 FMAs over shared tiles, beside cuDNN's (an sm80 kernel without
  # shared-memory tiling, about 12 ms per step in runs 9-12). A measurement, "ok" either way.
  if grep -q conv_wgrad_kernel src/core/config_keys.c; then
    unetr_step bf16-wgrad-cudnn precision=bf16 tf32=1 conv_wgrad_kernel=cudnn
    c=${samples_per_s[unetr_bf16-wgrad-cudnn]:-}; d=${samples_per_s[unetr_bf16]:-}
    if [ -n "$c" ] && [ -n "$d" ]; then
      format="%.3fx samples/s with the own kernel (default %s vs %s with conv_wgrad_kernel=cudnn)"
      record "own 3x3x3 wgrad unetr step speed-up" ok "$(awk -v c="$c" -v d="$d" -v fmt="$format" \
        'BEGIN{printf fmt, d/c, d, c}')"
    else
      record "own 3x3x3 wgrad unetr step speed-up" skip \
        "needs both steps (default ${d:-missing}, cudnn ${c:-missing} samples/s)"
    fi
  fi
  # The opt-in cuDNN convolution autotune (conv_autotune = 1): every convolution shape's
  # deterministic algorithms timed by cuDNN's Find when its plan is built (the eager warm-up
  # step) and the fastest kept. A measurement, "ok" either way; FAIL only when the step ran
  # without tuning anything (no "conv autotune:" line).
  if grep -q conv_autotune src/core/config_keys.c; then
    unetr_step bf16-conv-autotune precision=bf16 tf32=1 conv_autotune=1
    autotune_speedup_row "conv autotune unetr step speed-up" conv unetr_bf16 \
      unetr_bf16-conv-autotune "$LOGDIR/unetr_step_bf16-conv-autotune.log" plans_changed \
      "changed an algorithm" "Find" heuristic_ms heuristic
  fi
  # where its time goes (run 8: 57 ms per step at 3% of the bf16 peak, never profiled)
  kernel_profile_row "$kprof_unetr" "$PACK_DIR/kernel_profile_unetr.txt" "$LOGDIR/kernel_profile_unetr.log" \
    finetune --config jobs/finetune_btcv.cfg device=cuda precision=bf16 tf32=1
fi

# ---------------------------------------------------------------------------------------
# The rest of the correctness checks
# ---------------------------------------------------------------------------------------
# gpu_check CHECK PROGRAM LIMIT LOG FAIL_REGEX DETAIL_FN cmd...: one correctness row. PROGRAM
# must be built; cmd runs under the budget; then "ok" with DETAIL_FN LOG's output, FAIL on exit
# 77 (the test saw no GPU) or any other failure (naming LOG's first line matching FAIL_REGEX);
# no row of its own when the budget or SKIP_CHECKS left it out (timed recorded that).
gpu_check() {
  local check=$1 program=$2 limit=$3 log=$4 fail_re=$5 detail=$6 rc=125; shift 6
  built "$check" "$program" && { timed "$check" "$limit" "$log" "$@"; rc=$?; }
  case $rc in
    125) ;;
    0) record "$check" ok "$("$detail" "$log")" ;;
    77) record "$check" FAIL "skipped: no GPU visible to the test" ;;
    *) record "$check" FAIL "exit $rc ($(basename "$log")): $(first_line "$fail_re" "$log")" ;;
  esac
}

# ---- all-reduce over 2 ranks ----
allreduce_detail() { grep -qs 'ranks share a GPU' "$1" && echo "MPI fallback (GPU shared)" || echo NCCL; }
gpu_check "all-reduce 2 ranks" "$BUILD/tools/nccl_allreduce_check" 90 "$LOGDIR/nccl.log" 'FAIL|rror' \
  allreduce_detail bash tests/gpu/test_nccl_allreduce.sh

# ---- gradient all-reduce overlapped with backward (src/train/grad_sync.c) ----
overlap_detail() { grep '^ok' "$1" | sed 's/.*(\(.*\)) over \([0-9]*\) rank.*/\2 rank(s): \1/' | paste -sd';' | cut -c1-80; }
gpu_check "all-reduce async (comm stream)" "$BUILD/tools/nccl_overlap_check" 60 "$LOGDIR/nccl_overlap.log" \
  'FAIL|rror' overlap_detail bash tests/gpu/test_nccl_overlap.sh
overlap_ranks_detail() { echo "alice + unetr, every tensor within 1e-4"; }
gpu_check "overlap on = off, 2 ranks" "$BIN/alice" 150 "$LOGDIR/overlap_ranks.log" FAIL overlap_ranks_detail \
  env ALICE="$(abs_path "$BIN/alice")" DEVICE=cuda bash tests/train/test_overlap_allreduce.sh

# ---- GPU crops (data_device = gpu): the CUDA crop kernel and the loader's GPU path vs the CPU ----
gpu_crops_detail() { echo "$(grep -m1 'recipes' "$1" | sed 's/^ *//'); loader both modes, 3 budgets"; }
gpu_check "gpu crops = cpu crops" "$BUILD/tests/test_gpu_crops" 90 "$LOGDIR/gpu_crops.log" FAIL \
  gpu_crops_detail "$BUILD/tests/test_gpu_crops"

# ---- the step as a CUDA graph: replayed steps bit-identical to eager ones, and fallbacks ----
graph_detail() {
  echo "fp32, bf16, bf16 dino, bf16 flash (fused), unetr fp32, unetr bf16: $(grep -c 'graph vs eager 0 ' "$1") of $(grep -c 'graph vs eager' "$1") bit-identical to eager; fallbacks (host wait, scratch growth) eager"
}
gpu_check "cuda graph parity" "$BUILD/tests/test_cuda_graph_step" 150 "$LOGDIR/cuda_graph.log" 'FAIL|rror' \
  graph_detail "$BUILD/tests/test_cuda_graph_step"

# ---- section: further GPU correctness checks (other helpers: add here, and their build
# ---- targets to GPU_TARGETS above) ----
# The autotune's timing runs write only scratch memory: model-shaped bf16 GEMMs (bias epilogue,
# residual C != D, in-place beta = 1 with K = 9216, strided batch) agree with it on and off.
autotune_detail() { echo "4 cases, in-place sums accumulated once; $(grep -m1 '^gemm autotune: ' "$1" | cut -c16-120)"; }
gpu_check "gemm autotune on = off (results)" "$BUILD/tests/test_gemm_autotune_gpu" 90 "$LOGDIR/gemm_autotune.log" \
  'FAIL|rror' autotune_detail "$BUILD/tests/test_gemm_autotune_gpu"
# The conv autotune's Find trials write only scratch buffers: UNETR-shaped conv3d and
# conv_transpose3d forward + backward agree with it on and off and with the CPU backend, fp32
# and TF32, dW accumulated (beta = 1) exactly once; so do the channels-last weight gradients
# (conv_wgrad_layout = ndhwc), whose plan count the row names.
conv_autotune_detail() {
  local cl
  cl=$(grep -m1 '^conv_wgrad_layout = ndhwc: ' "$1" |
       sed 's/^conv_wgrad_layout = ndhwc: \([0-9]* of [0-9]*\) plans.*/\1/')
  # 0 plans: the ndhwc comparisons compared NCDHW with itself (cuDNN offered no algorithm)
  case $cl in
    "") ;;
    0\ of*) cl="$cl plans: channels-last NOT exercised" ;;
    *) cl="$cl plans channels-last" ;;
  esac
  echo "5 shapes x fp32/tf32 vs CPU, dW accumulated once; $(grep -m1 '^conv autotune: ' "$1" |
    cut -c16-120)${cl:+; ndhwc: $cl}"
}
gpu_check "conv autotune on = off (results)" "$BUILD/tests/test_conv_autotune_gpu" 120 "$LOGDIR/conv_autotune.log" \
  'FAIL|rror' conv_autotune_detail "$BUILD/tests/test_conv_autotune_gpu"
# A stalled stream ends the job with the nccl_timeout_s error instead of hanging (one rank);
# so does a communicator set-up that a rank never joins.
watchdog_detail() { grep -E '^ok: (hang|setup)' "$1" | cut -c5-70 | paste -sd';'; }
gpu_check "nccl watchdog (stall, timeout)" "$BUILD/tools/nccl_watchdog_check" 60 "$LOGDIR/nccl_watchdog.log" \
  'FAIL|rror' watchdog_detail bash tests/gpu/test_nccl_watchdog.sh

# ---------------------------------------------------------------------------------------
# Further figures
# ---------------------------------------------------------------------------------------
# rows_all_skipped CHECK ROW...: 0 (and CHECK listed as skipped) when SKIP_CHECKS matches every
# ROW, the names of the rows a benchmark records: SKIP_CHECKS is matched against check names,
# and a benchmark whose rows carry other names (op benchmarks: "linear ...", "attention ...")
# would otherwise run for rows nobody asked for (run 10 spent device time so).
rows_all_skipped() {
  local check=$1 row; shift
  [ -n "${SKIP_CHECKS:-}" ] || return 1
  for row in "$@"; do [[ $row =~ $SKIP_CHECKS ]] || return 1; done
  record "$check" skip "not run: SKIP_CHECKS matches every row it records"
}

# ---- op microbenchmarks ----
rc=125
rows_all_skipped "op benchmarks" "linear 9216x768->3072 bf16" "attention T=576 Dh=64 bf16 fused" ||
  { built "op benchmarks" "$BUILD/tests/bench_cuda_ops" &&
    { timed "op benchmarks" 150 "$LOGDIR/bench_ops.log" "$BUILD/tests/bench_cuda_ops"; rc=$?; }; }
if [ $rc = 0 ]; then
  n_before=${#rows[@]}
  for mode in fp32 tf32 bf16 bf16a; do
    line=$(grep "^tgt fc1 (all) *$mode " "$LOGDIR/bench_ops.log")
    [ -n "$line" ] && record "linear 9216x768->3072 $mode" ok \
      "$(echo "$line" | awk '{printf "%s TFLOP/s fwd, cuBLAS %s, ratio %s, bwd %s", $6, $7, $8, $9}')"
  done
  # the same layer with gemm_autotune off and on (ratio = off / on time)
  line=$(grep "^autotune tgt fc1 (all) *bf16a " "$LOGDIR/bench_ops.log")
  [ -n "$line" ] && record "linear 9216x768->3072 autotune" ok \
    "$(echo "$line" | awk '{printf "bf16a: fwd %s -> %s ms (%sx), bwd %s -> %s ms (%sx)", $(NF-5), $(NF-4), $(NF-3), $(NF-2), $(NF-1), $NF}')"
  for mode in fp32 bf16; do for kern in gemm fused; do
    line=$(grep "^enc all tokens $mode $kern " "$LOGDIR/bench_ops.log")
    [ -n "$line" ] && record "attention T=576 Dh=64 $mode $kern" ok \
      "$(echo "$line" | awk '{printf "fwd %s ms, bwd %s ms, saved %s MiB, %sx gemm", $(NF-5), $(NF-4), $(NF-1), $NF}')"
  done; done
  for mode in bf16 bf16a; do  # forward only (the EMA target): register-resident flash kernel
    line=$(grep "^enc all tokens $mode fwd-only " "$LOGDIR/bench_ops.log")
    [ -n "$line" ] && record "attention T=576 Dh=64 $mode fwd-only" ok \
      "$(echo "$line" | awk '{printf "fwd %s ms, %s TFLOP/s, %sx the gemm fwd", $(NF-5), $(NF-3), $NF}')"
  done
  # The model's bf16 entries: own flash kernels (attention_kernel = fused) beside cuDNN's fused
  # attention (attention_kernel = cudnn, auto's choice at these widths in bf16 since these rows
  # measured it faster; bench_cuda_ops' bench_attention_cudnn).
  for shape in "enc all tokens:T=576 Dh=64" "dec all tokens:T=576 Dh=32"; do for kern in fused cudnn; do
    line=$(grep "^${shape%%:*} bf16a $kern " "$LOGDIR/bench_ops.log")
    if [ -n "$line" ]; then
      record "attention ${shape#*:} bf16a $kern" ok \
        "$(echo "$line" | awk '{printf "fwd %s ms, bwd %s ms, %sx fused", $(NF-5), $(NF-4), $NF}')"
    elif [ $kern = cudnn ]; then
      record "attention ${shape#*:} bf16a cudnn" FAIL \
        "no row in bench_ops.log: $(grep -m1 -e 'no cudnn rows' -e 'cuDNN' "$LOGDIR/bench_ops.log" | cut -c1-100)"
    fi
  done; done
  [ ${#rows[@]} -gt "$n_before" ] ||
    record "op benchmarks" FAIL "no figures in bench_ops.log: $(sed -n 2p "$LOGDIR/bench_ops.log" | cut -c1-80)"
elif [ $rc = 77 ]; then
  record "op benchmarks" FAIL "skipped: no GPU visible to the benchmark"
elif [ $rc != 125 ]; then
  record "op benchmarks" FAIL "exit $rc (bench_ops.log)"
fi

# ---- elementwise kernels at the paper shapes: vector path, scalar fallback, a copy's speed ----
rc=125
built "elementwise benchmarks" "$BUILD/tests/bench_cuda_elementwise" &&
  { timed "elementwise benchmarks" 30 "$LOGDIR/bench_elementwise.log" "$BUILD/tests/bench_cuda_elementwise"; rc=$?; }
if [ $rc = 0 ]; then
  n_before=${#rows[@]}
  for op in patchify gather_rows patchify_bf16 gather_rows_bf16 masked_mse_bwd gelu_fwd_bf16 \
            gelu_bf16_formula add ln_fwd_bf16_tgt ln_fwd_bf16_enc ln_fwd_bf16_dec; do
    line=$(grep "^$op " "$LOGDIR/bench_elementwise.log")
    [ -n "$line" ] && record "elementwise $op" ok \
      "$(echo "$line" | awk '{printf "%s ms, %s of copy, vec gain %s", $(NF-6), $(NF-4), $NF}')"
  done
  [ ${#rows[@]} -gt "$n_before" ] ||
    record "elementwise benchmarks" FAIL "no figures in bench_elementwise.log: $(sed -n 2p "$LOGDIR/bench_elementwise.log" | cut -c1-80)"
elif [ $rc = 77 ]; then
  record "elementwise benchmarks" FAIL "skipped: no GPU visible to the benchmark"
elif [ $rc != 125 ]; then
  record "elementwise benchmarks" FAIL "exit $rc (bench_elementwise.log)"
fi

# ---- launch fusions (session 5): the unfused sequence beside the fused op, same run ----
# paired_bench CHECK TARGET LOG A B ROW...: for every ROW (the leading name of a line of the
# benchmark's table, whose last three columns are A's ms, B's ms and A/B) a row
# "A X ms, B Y ms, Zx"; fused_bench: A = unfused, B = fused.
# The rows of a paired benchmark's log (its last three columns: a's ms, b's ms, the ratio).
paired_rows() {
  local check=$1 log=$2 a=$3 b=$4 n_before row line; shift 4
  n_before=${#rows[@]}
  for row in "$@"; do
    line=$(grep -m1 -F -- "$row " "$log")
    [ -n "$line" ] && record "$check: $row" ok \
      "$(echo "$line" | awk -v a="$a" -v b="$b" '{printf "%s %s ms, %s %s ms, %sx", a, $(NF-2), b, $(NF-1), $NF}')"
  done
  [ ${#rows[@]} -gt "$n_before" ] ||
    record "$check" FAIL "no figures in $(basename "$log"): $(first_line . "$log")"
}
paired_bench() {
  local check=$1 target=$2 log=$LOGDIR/$3 a=$4 b=$5 rc=125; shift 5
  built "$check" "$target" && { timed "$check" 60 "$log" "$target"; rc=$?; }
  if [ $rc = 0 ]; then
    paired_rows "$check" "$log" "$a" "$b" "$@"
  elif [ $rc != 125 ]; then
    record "$check" FAIL "exit $rc ($(basename "$log"))"
  fi
}
fused_bench() { local check=$1 target=$2 log=$3; shift 3; paired_bench "$check" "$target" "$log" unfused fused "$@"; }
# The reconstruction loss's row kernels at the paper shape (9216 x 4096), each beside a copy
# of the same bytes in the same run: "copy X ms, kernel Y ms, Zx" (Z = 1: at copy bandwidth);
# normalize_rows' held path (one read per row) and its streamed fallback (three).
paired_bench "recon rows" "$BUILD/tests/bench_recon_rows" bench_recon_rows.log copy kernel \
  "normalize_rows held" "normalize_rows streamed" "mse_bwd 1/4 visible" "mse_bwd all masked" \
  "mse_fwd 1/4 visible"
# LN bwd: LayerNorm's dx, dgamma and dbeta in one pass over dy and x beside the dx kernel then
# the column sum (the paper step's encoder and decoder shapes, and their sum over one step).
# LN+proj bwd: a LayerNorm backward and the linear layer reading its dx, the linear layer's
# rounding column sum over the fp32 dx beside dx's bf16 copy and column sums made in the
# LayerNorm kernel (layernorm_bwd_dx16; GEMMs in both).
fused_bench "column sums" "$BUILD/tests/bench_colsum" bench_colsum.log \
  "tgt LN (all)" "enc LN (visible)" "tgt proj (all)" "tgt fc1 (all)" \
  "LN bwd enc (visible)" "LN bwd dec (all)" "LN bwd per step" \
  "LN+proj bwd enc (visible)" "LN+proj bwd dec (all)" "LN+linear bwd per step"
fused_bench "residual fusion" "$BUILD/tests/bench_residual_fusion" bench_residual.log \
  "tgt proj (all)" "tgt fc2 (all)" "tgt LN (all)"
fused_bench "fc1 gelu bwd" "$BUILD/tests/bench_linear_gelu_bwd" bench_linear_gelu.log \
  "tgt fc1 (all)" "enc fc1 (visible)"
# The same benchmark's second table: fc2's and fc1's backward with fc2's input gradient dh1 in
# fp32 beside bf16 (PyTorch autocast's rounding; half the bytes), per call and per step.
paired_bench "fc2 dh1 bf16" "$BUILD/tests/bench_linear_gelu_bwd" bench_dh1_bf16.log fp32-dh1 \
  bf16-dh1 "enc fc2+fc1 (visible)" "dec fc2+fc1 (all)" "fc2+fc1 per step"
# Attention backward storing bf16 dq, dk, dv for the bias-free qkv GEMMs, beside fp32 dqkv
# rounded by a separate launch.
fused_bench "qkv bf16 dqkv" "$BUILD/tests/bench_qkv_grad16" bench_qkv_grad16.log \
  "tgt qkv (all)" "enc qkv (visible)"
# Instance norm (UNETR's res blocks): own kernels beside cuDNN's batch norm on the planes
# (instnorm_kernel = own|cudnn; the default stays the faster one measured).
paired_bench "instnorm" "$BUILD/tests/bench_instnorm" bench_instnorm.log own cudnn \
  "fwd C16 96^3" "bwd C16 96^3" "fwd C128 12^3" "bwd C128 12^3" "sum of the rows"
# Its second table: the res-block passes fused (instance norm + residual + LeakyReLU forward,
# LeakyReLU's backward inside the instance norm's) beside the unfused ops, own kernels.
grep -q '^sum of the rows ' "$LOGDIR/bench_instnorm.log" 2>/dev/null &&
  paired_rows "instnorm lrelu" "$LOGDIR/bench_instnorm.log" unfused fused \
    "fused fwd C16 96^3" "fused bwd C16 96^3" "fused fwd C128 12^3" "fused bwd C128 12^3" \
    "fused sum"
# AdamW over the paper student: one launch per parameter set beside one per tensor, and the
# optimiser update with clipping and the EMA target in one launch beside the three it replaces
# (scale, adamw, ema_update) ("cuda": the CPU half would spend device time).
rc=125
built "adamw one launch" "$BUILD/tests/bench_adamw" &&
  { timed "adamw one launch" 60 "$LOGDIR/bench_adamw.log" "$BUILD/tests/bench_adamw" cuda; rc=$?; }
if [ $rc = 0 ] && grep -q "^cuda .*faster" "$LOGDIR/bench_adamw.log"; then
  record "adamw one launch" ok "$(awk '/^cuda +one call \(decay/{o=$(NF-2)} /^cuda +per tensor/{p=$(NF-2); c=$(NF-1)} /^cuda +one call \/ per tensor/{s=$7} /^cuda +clip\+adamw\+ema, 3 calls/{q=$(NF-2)} /^cuda +clip\+adamw\+ema, fused/{f=$(NF-2)} /^cuda +fused \/ 3 calls/{r=$6} /^cuda +clip pieces \/ loop/{k=$6} END{printf "%s ms vs %s ms in %s launches: %s; clip+adamw+ema in one launch %s ms vs 3 launches %s ms: %s; per-tensor clip in pieces vs a read-back per tensor: %s", o, p, c, s, f, q, r, k}' "$LOGDIR/bench_adamw.log")"
elif [ $rc != 125 ]; then
  record "adamw one launch" FAIL "exit $rc or no figures (bench_adamw.log)"
fi

# The GEMM attention kernel beside the default (auto: cuDNN's attention at head widths 32 and
# 64 in bf16) and the flash kernels (row above), so the choice of the default stays measured.
[ $math_modes = 1 ] && alice_step bf16-gemm precision=bf16 tf32=1 attention_kernel=gemm
# What bf16 activations buy: the same step with fp32 activations and bf16 GEMM operands only
# (already run above when the bf16 step failed).
[ $math_modes = 1 ] && grep -q bf16_activations src/core/config_keys.c &&
  [ $gemm_only_ran = 0 ] && alice_step bf16-gemm-only precision=bf16 tf32=1 bf16_activations=0

# ---- paper configuration trained from a data set: crops on the host vs on the GPU ----
# The data set and the runs (whose last step writes a ViT-B checkpoint) go to a scratch
# folder, not LOGDIR: only the logs and each run's metrics.csv travel back.
DATA_DIR=$(mktemp -d /tmp/alice-gpu-data.XXXXXX)
PH="$DATA_DIR/phantoms"; DS="$DATA_DIR/phantoms.h5"
have_data=0
if built "train from data" "$BIN/alice" &&
   timed "phantom data set" 120 "$LOGDIR/phantoms.log" bash -c \
     "'$BIN/alice' phantom --out '$PH' --cases 4 --size large && '$BIN/alice' pack --input '$PH' --out '$DS' spacing=1.2,1.2,2"; then
  have_data=1
else
  [ -f "$LOGDIR/phantoms.log" ] && record "phantom data set" FAIL "$(first_line '[Ee]rror' "$LOGDIR/phantoms.log")"
fi
train_data() {  # train_data cpu|gpu|gpu-churn|gpu-hostchurn
  local dd=$1 extra=() ms rc
  [ $have_data = 1 ] || return 0
  # gpu-churn: a GPU cache of about two of the four volumes, so uploads and evictions run
  # every step (they should overlap the compute: close to the gpu row); gpu-hostchurn: the
  # pinned host cache that small too, so the loader's threads free and pin volumes while the
  # step is recorded
  [ "$dd" = gpu-churn ] && extra=(gpu_cache_mb=96 prefetch=2)
  [ "$dd" = gpu-hostchurn ] && extra=(cache_mb=96 gpu_cache_mb=96 prefetch=2)
  if timed "train data_device=$dd" 180 "$LOGDIR/train_data_$dd.log" "$BIN/alice" pretrain \
       --config jobs/pretrain_vitb_paper.cfg device=cuda batch=8 precision=bf16 tf32=1 data="$DS" \
       data_device=${dd%%-*} "${extra[@]}" steps=8 warmup=1 log_every=1 ckpt_every=1000 \
       run_dir="$DATA_DIR/run_data_$dd"; then
    cp "$DATA_DIR/run_data_$dd/metrics.csv" "$LOGDIR/train_data_$dd.metrics.csv" 2>/dev/null
    # metrics.csv: a header, then steps 0..7; the mean over steps 4-8 (rows 5-9) leaves out
    # the first three, where cuDNN/cuBLAS pick their algorithms and the caches fill.
    ms=$(awk -F, 'NR==1{for(i=1;i<=NF;i++) if($i=="ms_per_step") c=i; next} NR>4 && c{s+=$c; n++} END{if(n) printf "%.1f", s/n}' \
         "$LOGDIR/train_data_$dd.metrics.csv" 2>/dev/null)
    if [ -n "$ms" ]; then record "train data_device=$dd" ok "$ms ms/step (steps 4-8, paper config bf16, 4 large phantoms)"
    else record "train data_device=$dd" FAIL "no ms_per_step for steps 4-8 in $DATA_DIR/run_data_$dd/metrics.csv"; fi
  else
    rc=$?; [ $rc = 125 ] || record "train data_device=$dd" FAIL "exit $rc: $(first_line '[Ee]rror' "$LOGDIR/train_data_$dd.log")"
  fi
}
train_data cpu
train_data gpu
# The loader's prefetch threads free pinned volumes (cudaFreeHost in io/loader.c's
# graveyard_flush, which synchronises the context) and pin new ones (cudaHostAlloc) while the
# training thread records the step. With a host cache of about two of the four volumes that
# happens every step; the graph must still be recorded and replayed (a spoiled recording would
# only cost speed: the loop then stays eager and correct).
if [ $have_data = 1 ]; then
  train_data gpu-hostchurn
  hc_log="$LOGDIR/train_data_gpu-hostchurn.log"
  hc_line=$(grep -o 'cuda_graph: [0-9]* steps recorded.*' "$hc_log" 2>/dev/null | tail -1)
  hc_warn=$(first_line 'warning.*cuda_graph' "$hc_log")
  hc_replays=$(echo "$hc_line" | sed -n 's/.* \([0-9]*\) replayed.*/\1/p')
  if [ ! -f "$hc_log" ]; then :
  elif [ -n "$hc_warn" ]; then record "graph with host cache churn" FAIL "$hc_warn"
  elif [ -z "$hc_line" ]; then
    record "graph with host cache churn" FAIL "no 'cuda_graph: N steps recorded' line in ${hc_log##*/}"
  elif [ "${hc_replays:-0}" = 0 ]; then
    record "graph with host cache churn" FAIL "never replayed: $hc_line"
  else record "graph with host cache churn" ok "$hc_line"; fi
fi

# ---------------------------------------------------------------------------------------
# Extras: dropped first when the budget runs short
# ---------------------------------------------------------------------------------------
# ---- section: further benchmarks (other helpers: add here) ----

# ---- loader: GPU crops/s beside CPU crops/s per core (192x192x64 crops) ----
rc=125
built "loader bench" "$BUILD/tests/bench_loader" &&
  { timed "loader bench" 120 "$LOGDIR/bench_loader.log" "$BUILD/tests/bench_loader"; rc=$?; }
if [ $rc = 0 ]; then
  for w in pre-training fine-tuning; do
    cpu=$(grep "^| $w.*| cpu | 0 |" "$LOGDIR/bench_loader.log" | awk -F'|' '{gsub(/ /,"",$6); print $6}')
    gpu=$(grep "^| $w.*| gpu | 2 |" "$LOGDIR/bench_loader.log" | awk -F'|' '{gsub(/ /,"",$5); gsub(/ /,"",$9); print $5 " crops/s (" $9 "x one CPU core)"}')
    if [ -n "$gpu" ]; then record "loader $w crops" ok "cpu ${cpu:-?} crops/s/core; gpu $gpu"
    else record "loader $w crops" FAIL "no GPU row in bench_loader.log: $(grep -m1 -o 'skipped: [^|]*' "$LOGDIR/bench_loader.log" || echo '?')"; fi
  done
elif [ $rc != 125 ]; then
  record "loader bench" FAIL "exit $rc (bench_loader.log)"
fi

train_data gpu-churn

# ---- all-reduce overlapped with backward against after it (2 ranks; one GPU: staged, ratio ~1) ----
rc=125
built "overlap step time, 2 ranks" "$BIN/alice" &&
  { timed "overlap step time, 2 ranks" 120 "$LOGDIR/bench_overlap.log" env ALICE="$(abs_path "$BIN/alice")" DEVICE=cuda REPS=1 \
      bash tests/bench/bench_overlap.sh; rc=$?; }
case $rc in
  125) ;;
  0) record "overlap step time, 2 ranks" ok "$(grep -o 'off/on = [0-9.]*' "$LOGDIR/bench_overlap.log") (> 1: overlap pays; 2 ranks on 1 GPU stage through MPI: ~1)" ;;
  77) record "overlap step time, 2 ranks" FAIL "skipped: no GPU visible to the benchmark" ;;
  *) record "overlap step time, 2 ranks" FAIL "exit $rc (bench_overlap.log): $(first_line 'alice: error|bench_overlap: ' "$LOGDIR/bench_overlap.log")" ;;
esac

# What the bf16 weight copies save: the same step rounding the weights in every GEMM.
[ $math_modes = 1 ] && grep -q bf16_weight_copy src/core/config_keys.c &&
  alice_step bf16-no-weight-copy precision=bf16 tf32=1 bf16_weight_copy=0
[ $math_modes = 1 ] && alice_step tf32 precision=fp32 tf32=1
alice_step fp32 precision=fp32 tf32=0
# PyTorch with F.scaled_dot_product_attention (flash kernels): what a torch 2.x user writes
torch_step "eager bf16 sdpa" bf16 0 150 --attention sdpa
a=${samples_per_s[alice_bf16]:-}; t=${samples_per_s["torch_eager bf16 sdpa"]:-}
[ -n "$a" ] && [ -n "$t" ] && record "alice bf16 / torch eager bf16 sdpa" ok \
  "$(awk -v a="$a" -v t="$t" 'BEGIN{printf "%.2fx throughput (%s vs %s samples/s; the 1.5x target is against plain eager bf16)", a/t, a, t}')"
torch_step "eager fp32" none 0 150
# Whole-step compile of ViT-B takes minutes (tiny: 82-96 s on 2 CPU cores under torch 2.11).
torch_step "compile bf16" bf16 1 360
a=${samples_per_s[alice_bf16]:-}; t=${samples_per_s["torch_compile bf16"]:-}
[ -n "$a" ] && [ -n "$t" ] && record "alice bf16 / torch compile bf16" ok \
  "$(awk -v a="$a" -v t="$t" 'BEGIN{printf "%.2fx throughput (%s vs %s samples/s; no target)", a/t, a, t}')"

exit $failed
