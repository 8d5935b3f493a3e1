#!/usr/bin/env bash
# threads = 0 takes the rank's share of the node's cores, but no more than the CPUs the rank
# may run on: a rank bound to one core (taskset here; mpirun's bind-to-core, srun --cpu-bind)
# ran a thread per core of the node on that one core. The checkpoint's threads attribute
# records what the run used.
source "$(dirname "$0")/lib.sh"
threads_of() {  # run directory -> the threads attribute of its checkpoint
  "$PYTHON" -c "import h5py, sys; print(int(h5py.File(sys.argv[1], 'r').attrs['threads']))" "$1/ckpt_1.h5"
}
taskset -c 0 "$ALICE" pretrain --config "$MICRO" run_dir="$WORK/one" steps=1 ckpt_every=1 threads=0 \
  > "$WORK/one.log" 2>&1 || { tail "$WORK/one.log"; fail "the run bound to one CPU failed"; }
[ "$(threads_of "$WORK/one")" = 1 ] || fail "bound to one CPU: threads = $(threads_of "$WORK/one")"
echo "ok: bound to one CPU, threads = 0 uses 1"
cpus=$(nproc)
if [ "$cpus" -ge 2 ]; then
  taskset -c 0,1 "$ALICE" pretrain --config "$MICRO" run_dir="$WORK/two" steps=1 ckpt_every=1 \
    threads=0 > "$WORK/two.log" 2>&1 || { tail "$WORK/two.log"; fail "the run on two CPUs failed"; }
  [ "$(threads_of "$WORK/two")" = 2 ] || fail "two CPUs: threads = $(threads_of "$WORK/two")"
  echo "ok: on two CPUs, threads = 0 uses 2"
fi
