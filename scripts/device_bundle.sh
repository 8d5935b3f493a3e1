#!/usr/bin/env bash
# Downloads (never installs) the Debian 12 packages that Alice needs to build and run on a
# bare GPU machine we do not control (the lent device: Ubuntu-like, nvcc present, but no
# Open MPI, parallel HDF5, OpenBLAS or niftilib, and no network). Run it HERE, where apt
# works; carry the result to the device (`carry: [".devdeps"]`), where
# scripts/device_setup.sh unpacks it without overwriting anything the image already has.
#
#   scripts/device_bundle.sh [DEST]        (default .devdeps in the repository root)
#
# Environment: BUNDLE_MAX_MIB (default 40) -- the travelling working tree is capped at
# 64 MiB, so the bundle must leave room for the sources.
#
# What goes in, and why only that:
#   * build-only packages (headers, .so links, .pc files, the mpicc wrapper) are taken
#     WITHOUT their dependencies: their own Depends (gfortran, libcurl-dev, libevent-dev,
#     jquery ...) are for other uses of those packages, not for compiling Alice;
#   * runtime libraries are taken with the closure of their Depends, except packages every
#     glibc system with apt and a compiler already has (BASE_SYSTEM below) and optional
#     plugins that would drag in X11/OpenCL/ICU (libhwloc-plugins: hwloc works without them).
# The closure is computed here from `apt-cache show` (first alternative of each clause), so
# an excluded package also stops the walk through ITS dependencies -- `apt-cache depends
# --recurse` cannot do that and pulls in ~60 MiB of X11, ICU and PAM.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.devdeps}
MAX_MIB=${BUNDLE_MAX_MIB:-40}

# Compile and link Alice: mpicc + mpi.h, hdf5-openmpi.pc, cblas.h of OpenBLAS, nifti2_io.h,
# the libz.so/libznz.so/libnifti2.so link names, pkg-config and make themselves.
BUILD_ONLY=(libopenmpi-dev libhdf5-openmpi-dev libopenblas-dev libopenblas-openmp-dev
            libnifti2-dev libniftiio-dev libznz-dev zlib1g-dev)
# What the binaries load at run time, plus the tools the build and the runs call.
RUNTIME_SEEDS=(openmpi-bin openmpi-common libopenmpi3 libhdf5-openmpi-103-1
               libopenblas0-openmp libnifti2-2 libniftiio2 libznz3 pkg-config pkgconf make)
# Present on any Debian/Ubuntu image that has apt, Python and gcc (the device has all
# three), or needed only by package scripts that dpkg-deb -x never runs. Not here on purpose:
# libunistring2 (Ubuntu 24.04 has only libunistring.so.5, and Debian's libpsl/libcurl need .so.2;
# found by the Ubuntu 24.04 rehearsal in tests/gpu/README.md).
BASE_SYSTEM=(libc6 libc-bin libgcc-s1 libstdc++6 gcc-12-base zlib1g libzstd1 liblzma5 libbz2-1.0
             libcrypt1 libselinux1 libpcre2-8-0 libacl1 libattr1 libaudit1 libaudit-common
             libcap-ng0 libcap2 libmd0 libgmp10 libgnutls30 libhogweed6 libnettle8 libp11-kit0
             libtasn1-6 libidn2-0 libffi8 libudev1 libsystemd0 libtinfo6
             libncursesw6 readline-common debconf cdebconf dpkg tar adduser passwd perl-base
             libpam0g libpam-modules libpam-modules-bin libsemanage2 libsemanage-common
             libsepol2 install-info libdebian-installer4 libnewt0.52 libslang2 libtextwrap1
             libdb5.3 libuuid1 lsb-base sensible-utils init-system-helpers
             openssh-client libhwloc-plugins)

command -v apt-get >/dev/null && command -v apt-cache >/dev/null || {
  echo "device_bundle: apt-get/apt-cache not found: run this on the Debian 12 development machine" >&2
  exit 1; }

declare -A excluded=() seen=()
for p in "${BASE_SYSTEM[@]}"; do excluded[$p]=1; done

# Direct dependencies of one package: Depends + Pre-Depends, first alternative of each
# clause, version constraints and :arch qualifiers dropped.
direct_deps() {
  apt-cache show --no-all-versions "$1" 2>/dev/null |
    awk '/^(Pre-)?Depends:/{sub(/^[^:]*:/, ""); print}' | tr ',' '\n' |
    sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/[[:space:]]//g' | grep -v '^$' || true
}

# Breadth-first walk of the runtime closure.
queue=("${RUNTIME_SEEDS[@]}")
runtime=()
while [ ${#queue[@]} -gt 0 ]; do
  p=${queue[0]}; queue=("${queue[@]:1}")
  [ -n "${seen[$p]:-}" ] && continue
  seen[$p]=1
  [ -n "${excluded[$p]:-}" ] && continue
  if ! apt-cache show --no-all-versions "$p" >/dev/null 2>&1; then
    # A virtual package (e.g. <libcurl-dev>) or one this apt does not know.
    echo "device_bundle: note: '$p' has no installable candidate; skipped" >&2
    continue
  fi
  runtime+=("$p")
  while read -r d; do [ -n "$d" ] && queue+=("$d"); done < <(direct_deps "$p")
done

pkgs=("${BUILD_ONLY[@]}" "${runtime[@]}")
mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
echo "device_bundle: ${#pkgs[@]} packages: ${pkgs[*]}"

# Download into a temporary folder, then swap it in: a failed run leaves the old bundle.
tmp=$(mktemp -d /tmp/devdeps.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && apt-get download -q "${pkgs[@]}" ) > "$tmp/.download.log" 2>&1 || {
  echo "device_bundle: apt-get download failed (network? stale lists: run apt-get update):" >&2
  tail -5 "$tmp/.download.log" >&2; exit 1; }
rm -f "$tmp/.download.log"
printf '%s\n' "${pkgs[@]}" > "$tmp/PACKAGES"
# The cuDNN frontend headers (attention_kernel = cudnn; the device cannot fetch them): the
# copy scripts/deps.sh made, else a fresh download. device_setup.sh ignores the folder (no
# .deb); the Makefile finds .devdeps/cudnn-frontend/include by itself.
if [ -d "$DEST/cudnn-frontend" ]; then cp -a "$DEST/cudnn-frontend" "$tmp/"; fi
bash scripts/deps_cudnn_frontend.sh "$tmp/cudnn-frontend" || {
  echo "device_bundle: the cuDNN frontend headers could not be fetched (see above)" >&2; exit 1; }
{
  echo "Debian 12 packages for scripts/device_setup.sh, made by scripts/device_bundle.sh"
  echo "on $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(. /etc/os-release && echo "$PRETTY_NAME")."
} > "$tmp/README"

kib=$(du -sk "$tmp" | cut -f1)
mib=$(( (kib + 1023) / 1024 ))
if [ "$mib" -gt "$MAX_MIB" ]; then
  echo "device_bundle: bundle is ${mib} MiB, over the ${MAX_MIB} MiB budget (the travelling tree is" \
       "capped at 64 MiB): trim RUNTIME_SEEDS/BASE_SYSTEM in $0 or raise BUNDLE_MAX_MIB" >&2
  exit 1
fi
rm -rf "$DEST.old"; [ -e "$DEST" ] && mv "$DEST" "$DEST.old"
mkdir -p "$(dirname "$DEST")" && mv "$tmp" "$DEST" && rm -rf "$DEST.old"
trap - EXIT
echo "device_bundle: $DEST: $(ls "$DEST"/*.deb | wc -l) .deb files, ${mib} MiB ($kib KiB)"
