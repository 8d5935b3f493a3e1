#!/usr/bin/env bash
# Finds the Debian packages Alice needs; installs the missing ones with apt-get when run as
# root, otherwise prints the command to run. Quick when everything is present.
# Build packages (MPI, parallel HDF5, OpenBLAS, niftilib) are required; the test tools (Python
# references, Slurm for the local test cluster) only warn when missing: the tests that need
# them report themselves skipped. ALICE_SKIP_DEPS=1 skips the check (a cluster whose MPI and
# HDF5 come from modules), and so does a system without dpkg.
set -euo pipefail
build_pkgs=(libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools libopenblas-dev
            libopenblas0-openmp libnifti2-dev zlib1g-dev)
test_pkgs=(python3-numpy python3-h5py python3-matplotlib python3-nibabel python3-scipy python3-torch
           python3-pip slurm-wlm munge)
# With nvcc (a CUDA build): the cuDNN frontend headers for attention_kernel = cudnn, pinned, into
# .devdeps/cudnn-frontend (scripts/deps_cudnn_frontend.sh). Optional: without them the build
# still succeeds and only that kernel choice is refused, so a failure here is a warning.
# ALICE_SKIP_DEPS=1 (modules clusters, often without internet on the build node) skips that
# download too: the pip fetch would retry until it timed out.
if [ "${ALICE_SKIP_DEPS:-0}" = 1 ]; then
  echo "deps: ALICE_SKIP_DEPS=1: not checking packages (MPI, parallel HDF5, OpenBLAS and" \
       "niftilib must be found by make) and not fetching the cuDNN frontend headers" \
       "(scripts/deps_cudnn_frontend.sh, or CUDNN_FRONTEND_INCLUDE=DIR) or MONAI for the tests" \
       "(scripts/deps_monai.sh)"
  exit 0
fi
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  bash "$(dirname "$0")/deps_cudnn_frontend.sh" ||
    echo "deps: warning: cuDNN frontend headers not fetched: attention_kernel = cudnn unavailable in this build" >&2
fi
# The MONAI checks of the tests (the exported encoder, the UNETR reference against MONAI's own
# networks): pinned wheels into .devdeps/monai (scripts/deps_monai.sh, which needs pip: in
# test_pkgs), fetched once the packages are in place, at every exit below. Optional: without
# them those checks report themselves skipped.
fetch_monai() {
  bash "$(dirname "$0")/deps_monai.sh" ||
    echo "deps: warning: MONAI not fetched: the tests' MONAI checks will be skipped" >&2
}
trap 'rc=$?; [ "$rc" -ne 0 ] || fetch_monai; exit "$rc"' EXIT
if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "deps: not a Debian system: not checking packages; make needs mpicc, parallel HDF5" \
       "(pkg-config hdf5-openmpi, or HDF5_CFLAGS/HDF5_LIBS), OpenBLAS and niftilib" \
       "(docs/OPERATIONS.md section 1)"
  exit 0
fi
missing_of() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t missing_build < <(missing_of "${build_pkgs[@]}")
mapfile -t missing_test < <(missing_of "${test_pkgs[@]}")
missing=("${missing_build[@]}" "${missing_test[@]}")
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "deps: installing with apt-get (this takes a few minutes once)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing[@]}" >/tmp/alice-deps.log 2>&1 || {
    echo "deps: apt-get install failed; see /tmp/alice-deps.log" >&2; exit 1; }
  echo "deps: installed"
elif [ ${#missing_build[@]} -gt 0 ]; then
  echo "deps: run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  echo "deps: (or, when MPI and HDF5 come from modules, ALICE_SKIP_DEPS=1 make ...)" >&2
  exit 1
else
  echo "deps: warning: test tools missing (${missing_test[*]}); the tests that need them will be" \
       "skipped. To have them: apt-get install -y ${missing_test[*]} (as root)" >&2
fi
