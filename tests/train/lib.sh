# Shared by the training tests: paths and small assertions.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
MICRO=$ROOT/tests/train/micro.cfg
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mpirun_n() { local n=$1; shift; mpirun --allow-run-as-root --oversubscribe -np "$n" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# alice_signalled ARGS...: "$ALICE" ARGS started with SIGUSR1 blocked and already pending (the
# mask survives exec), so the signal is delivered when alice unblocks it at its training
# loop's start: a deterministic preemption. Its exit status is alice's.
alice_signalled() {
  "$PYTHON" - "$ALICE" "$@" <<'PY'
import os, signal, subprocess, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])   # inherited by the child
p = subprocess.Popen(sys.argv[1:])
os.kill(p.pid, signal.SIGUSR1)                                  # pending until alice unblocks it
sys.exit(p.wait())
PY
}
