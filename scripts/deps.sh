#!/usr/bin/env bash
# Finds the Debian packages Alice needs; installs the missing ones with apt-get when run as
# root, otherwise prints the command to run. Quick when everything is present.
set -euo pipefail
pkgs=(libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools libopenblas-dev libopenblas0-openmp libnifti2-dev
      python3-numpy python3-h5py python3-matplotlib python3-nibabel python3-scipy python3-torch
      slurm-wlm munge)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# With nvcc (a CUDA build): the cuDNN frontend headers for attention_kernel = cudnn, pinned, into
# .devdeps/cudnn-frontend (scripts/deps_cudnn_frontend.sh). Optional: without them the build
# still succeeds and only that kernel choice is refused, so a failure here is a warning.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  bash "$(dirname "$0")/deps_cudnn_frontend.sh" ||
    echo "deps: warning: cuDNN frontend headers not fetched: attention_kernel = cudnn unavailable in this build" >&2
fi
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "deps: installing with apt-get (this takes a few minutes once)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing[@]}" >/tmp/alice-deps.log 2>&1 || {
    echo "deps: apt-get install failed; see /tmp/alice-deps.log" >&2; exit 1; }
  echo "deps: installed"
else
  echo "deps: run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
