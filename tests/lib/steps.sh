# Shared by the end-to-end script tests (source it after setting T, the test's temporary
# folder): fail MESSAGE ends the test; run CMD... runs one step quietly into $T/last.log and
# shows that log's tail when the step fails.
fail() { echo "FAIL: $*"; exit 1; }
run() { echo "+ $*"; local rc=0; "$@" > "$T/last.log" 2>&1 || rc=$?; [ $rc -eq 0 ] || { tail -30 "$T/last.log"; fail "$1 $2 exited with $rc"; }; }
