#!/usr/bin/env bash
# Makes a bare GPU machine able to build and run Alice, from the Debian 12 packages that
# scripts/device_bundle.sh downloaded into .devdeps/ (carried along; nothing can be fetched
# there). Run THERE, first thing (tests/gpu/run.sh calls it when mpicc or hdf5-openmpi is
# missing):
#
#   scripts/device_setup.sh [--env-file FILE] [--bundle DIR] [--root DIR] [--stage DIR]
#                           [--force] [--dry-run] [--no-dpkg] [--no-checks] [--skip-cuda]
#
#   1. unpacks every .deb with `dpkg-deb -x` (or `ar x` + tar where dpkg is absent) into a
#      staging folder, then copies into ROOT (default /) only what does NOT exist there: the
#      image's own files are never replaced, and a library whose soname the image already
#      has (say libssl.so.3) is left out entirely, so ldconfig cannot prefer our copy;
#   2. recreates the links that the packages' postinst scripts make with update-alternatives
#      (mpicc, mpirun, cblas.h, libopenblas.so.0 ...), which dpkg-deb -x does not run;
#   3. runs ldconfig, then checks mpicc, pkg-config hdf5-openmpi, mpirun, and that no
#      installed library lacks a dependency (ldd);
#   4. finds nvcc, cuDNN and NCCL (toolkit, /usr, or the pip wheels of the python3 on PATH,
#      whose libraries may exist only as libX.so.N) and links what the Makefile cannot find
#      by itself into a scratch CUDNN_HOME/NCCL_HOME; CUDA_LIBDIR names cuBLAS/cudart's
#      folder when they are not in $CUDA_HOME/lib64;
#   5. writes FILE (default STAGE/env.sh): the exports (PATH, LD_LIBRARY_PATH, CUDNN_HOME,
#      NCCL_HOME, CUDA_LIBDIR, Open MPI settings for root in a container) to source before
#      building.
#
# --dry-run reports what would be copied and linked and changes nothing under ROOT.
# --root DIR installs into a fake root (tests); ldconfig and the tool checks then run only
# with --root /. Every step is logged on stdout; a missing piece stops with one line
# "device_setup: ERROR: ..." that names it and the fix. Environment: ALICE_CUDA_SEARCH
# (extra folders to search for cudnn.h/nccl.h and their libraries, space-separated, searched
# first); ALICE_CUDA_SEARCH_ONLY=1 searches only those and the toolkit (tests).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

BUNDLE=.devdeps
ROOT=/
STAGE=/tmp/alice-devdeps
ENV_FILE=
FORCE=0 DRY=0 NO_DPKG=0 CHECKS=1 CUDA=1
while [ $# -gt 0 ]; do
  case $1 in
    --bundle) BUNDLE=$2; shift ;;
    --root) ROOT=$2; shift ;;
    --stage) STAGE=$2; shift ;;
    --env-file) ENV_FILE=$2; shift ;;
    --force) FORCE=1 ;;
    --dry-run) DRY=1 ;;
    --no-dpkg) NO_DPKG=1 ;;
    --no-checks) CHECKS=0 ;;
    --skip-cuda) CUDA=0 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "device_setup: ERROR: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
ROOT=${ROOT%/}
ENV_FILE=${ENV_FILE:-$STAGE/env.sh}
REBUNDLE="re-run scripts/device_bundle.sh on the development machine and carry .devdeps"

log() { echo "device_setup: $*"; }
die() { echo "device_setup: ERROR: $*" >&2; exit 1; }
t_start=$SECONDS
exports=()   # lines for ENV_FILE
export_var() { exports+=("export $1=$(printf '%q' "$2")"); export "$1=$2"; }

# Library folders the dynamic linker searches without configuration (Debian/Ubuntu layout).
STD_LIB_DIRS=(lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib usr/lib lib64 usr/lib64 usr/local/lib)
is_std_lib_dir() { local d; for d in "${STD_LIB_DIRS[@]}"; do [ "$1" = "$d" ] && return 0; done; return 1; }
exists_in_root() { [ -e "$ROOT/$1" ] || [ -L "$ROOT/$1" ]; }

# Where ROOT already provides a soname ("" if nowhere): standard folders, then ld.so's cache.
soname_in_root() {
  local d
  for d in "${STD_LIB_DIRS[@]}"; do
    [ -e "$ROOT/$d/$1" ] && { echo "/$d/$1"; return; }
  done
  if [ -z "$ROOT" ] && command -v ldconfig >/dev/null; then
    ldconfig -p 2>/dev/null | awk -v s="$1" '$1 == s && /x86-64/ {print $NF; exit}'
  fi
  return 0
}

unpack_deb() {  # unpack_deb DEB DATA_DIR CONTROL_DIR
  if [ "$NO_DPKG" = 0 ] && command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$1" "$2" && dpkg-deb -e "$1" "$3"
    return
  fi
  # No dpkg (non-Debian image): a .deb is an ar archive of control.tar.* and data.tar.*.
  command -v ar >/dev/null || die "neither dpkg-deb nor ar found to unpack $1: install binutils"
  local tmp member deb
  deb=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
  tmp=$(mktemp -d)
  (cd "$tmp" && ar x "$deb") || { rm -rf "$tmp"; die "ar could not read $1: $REBUNDLE"; }
  for member in "$tmp"/data.tar.* "$tmp"/control.tar.*; do
    local dest=$2; case $member in */control.tar.*) dest=$3 ;; esac
    case $member in
      *.xz) tar -xJf "$member" -C "$dest" ;;
      *.zst) zstd -dc "$member" | tar -xf - -C "$dest" ;;
      *.gz) tar -xzf "$member" -C "$dest" ;;
      *) tar -xf "$member" -C "$dest" ;;
    esac || { rm -rf "$tmp"; die "could not unpack $member of $1 (xz/zstd missing?): $REBUNDLE"; }
  done
  rm -rf "$tmp"
}

need_mpi_hdf5() {
  [ "$FORCE" = 1 ] && return 0
  [ -n "$ROOT" ] && return 0   # a fake root: always install into it
  command -v mpicc >/dev/null && pkg-config --exists hdf5-openmpi 2>/dev/null &&
    [ -e /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 ] &&
    [ -e /usr/include/nifti/nifti2_io.h ] && return 1
  return 0
}

install_bundle() {
  [ -d "$BUNDLE" ] || die "bundle folder '$BUNDLE' not found: $REBUNDLE (carry: [\".devdeps\"])"
  local debs=("$BUNDLE"/*.deb)
  [ -e "${debs[0]}" ] || die "no .deb files in '$BUNDLE': $REBUNDLE"
  log "unpacking ${#debs[@]} packages from $BUNDLE into $STAGE ($( [ "$NO_DPKG" = 0 ] && command -v dpkg-deb >/dev/null && echo dpkg-deb || echo 'ar + tar'))"
  rm -rf "$STAGE/root" "$STAGE/control"
  mkdir -p "$STAGE/root" "$STAGE/control"
  local deb name
  for deb in "${debs[@]}"; do
    name=$(basename "$deb"); name=${name%%_*}
    mkdir -p "$STAGE/control/$name"
    unpack_deb "$deb" "$STAGE/root" "$STAGE/control/$name"
  done

  # Sonames the image already provides: our copy of such a library stays out.
  declare -A skip_group=()
  local f dir base soname have
  while IFS= read -r f; do
    dir=${f%/*}; base=${f##*/}
    is_std_lib_dir "$dir" || continue
    [[ $base =~ ^(lib.+\.so\.[0-9]+) ]] || continue
    soname=${BASH_REMATCH[1]}
    [ -n "${skip_group[$soname]:-}" ] && continue
    have=$(soname_in_root "$soname")
    [ -n "$have" ] && skip_group[$soname]=$have
  done < <(cd "$STAGE/root" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort)
  for soname in "${!skip_group[@]}"; do log "keeping the image's $soname (${skip_group[$soname]})"; done

  local new=() kept=0 skipped_lib=0 in_group
  while IFS= read -r f; do
    dir=${f%/*}; base=${f##*/}
    in_group=""
    if is_std_lib_dir "$dir" && [[ $base =~ ^(lib.+\.so\.[0-9]+) ]]; then in_group=${BASH_REMATCH[1]}; fi
    if [ -n "$in_group" ] && [ -n "${skip_group[$in_group]:-}" ]; then skipped_lib=$((skipped_lib + 1)); continue; fi
    if exists_in_root "$f"; then kept=$((kept + 1)); continue; fi
    new+=("$f")
  done < <(cd "$STAGE/root" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort)
  log "${#new[@]} files to install into ${ROOT:-/}; $kept already there (kept), $skipped_lib of libraries the image has"
  printf '%s\n' "${new[@]}" > "$STAGE/installed.txt"
  if [ "$DRY" = 1 ]; then
    log "dry run: would install:"; sed 's/^/  /' "$STAGE/installed.txt"
  elif [ ${#new[@]} -gt 0 ]; then
    # tar keeps symlinks as they are, and --keep-directory-symlink writes lib/... through
    # a merged-/usr image's /lib -> usr/lib link instead of replacing it.
    (cd "$STAGE/root" && tar -cf - -T "$STAGE/installed.txt") |
      tar -xf - -C "${ROOT:-/}" --keep-directory-symlink --no-same-owner ||
      die "copying the unpacked packages into ${ROOT:-/} failed (read-only? disk full?)"
  fi

  # A development link (libz.so -> libz.so.1.2.13) into a library we left out points
  # nowhere: point it at the image's copy of that soname instead.
  local link target tsoname
  rm -f "$STAGE/dangling.txt"
  if [ "$DRY" = 0 ]; then
    while IFS= read -r f; do
      link="$ROOT/$f"
      [ -L "$link" ] && [ ! -e "$link" ] || continue
      target=$(readlink "$link"); target=${target##*/}
      tsoname=""
      [[ $target =~ ^(lib.+\.so\.[0-9]+) ]] && tsoname=${BASH_REMATCH[1]}
      if [ -n "$tsoname" ] && [ -n "${skip_group[$tsoname]:-}" ]; then
        # Beside it: a relative link (also right inside a fake root); else the full path.
        if [ -e "$(dirname "$link")/$tsoname" ]; then ln -sfn "$tsoname" "$link"
        else ln -sfn "${skip_group[$tsoname]}" "$link"; fi
        log "relinked /$f -> $(readlink "$link") (the image's $tsoname)"
      else
        # Links into packages left out on purpose (HDF5's C++/Fortran, documentation).
        echo "/$f -> $(readlink "$link")" >> "$STAGE/dangling.txt"
      fi
    done < "$STAGE/installed.txt"
    [ -s "$STAGE/dangling.txt" ] &&
      log "$(wc -l < "$STAGE/dangling.txt") links point into packages not bundled (C++/Fortran HDF5, docs; unused): $STAGE/dangling.txt"
  fi

  install_alternatives
}

# update-alternatives --install LINK NAME PATH PRIO / --slave LINK NAME PATH, read from the
# packages' postinst scripts; each LINK that does not exist becomes a plain symlink to PATH
# (when PATH exists). Tuples built from shell variables are skipped.
install_alternatives() {
  local script made=0
  for script in "$STAGE"/control/*/postinst; do
    [ -e "$script" ] || continue
    while read -r link target; do
      exists_in_root "${link#/}" && continue
      [ -e "$ROOT$target" ] || [ -e "$STAGE/root$target" ] || continue
      if [ "$DRY" = 1 ]; then log "dry run: would link $link -> $target"; continue; fi
      mkdir -p "$ROOT$(dirname "$link")"
      ln -s "$target" "$ROOT$link"
      made=$((made + 1))
      log "linked $link -> $target (alternative from $(basename "$(dirname "$script")"))"
    done < <(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$script" | tr -s ' \t' '  ' |
             awk '{ for (i = 1; i <= NF; i++) if (($i == "--install" || $i == "--slave") && i + 3 <= NF) {
                      l = $(i+1); t = $(i+3); gsub(/"/, "", l); gsub(/"/, "", t)
                      if (l ~ /^\// && t ~ /^\// && l !~ /\$/ && t !~ /\$/) print l, t } }')
  done
  log "$made alternative links made"
}

check_mpi_hdf5() {
  if [ -z "$ROOT" ] && [ "$DRY" = 0 ] && command -v ldconfig >/dev/null; then
    ldconfig && log "ldconfig done"
  fi
  [ "$CHECKS" = 1 ] && [ -z "$ROOT" ] || { log "tool checks skipped (--no-checks or a fake root)"; return; }
  # An MPI of the image's own found first on PATH would pair with our HDF5 built for Debian's
  # Open MPI: put ours first.
  local t v
  for t in mpicc mpirun mpiexec; do
    [ -x "/usr/bin/$t.openmpi" ] || continue
    [ "$(readlink -f "$(command -v "$t" || true)")" = "$(readlink -f "/usr/bin/$t.openmpi")" ] && continue
    mkdir -p "$STAGE/bin" && ln -sfn "/usr/bin/$t.openmpi" "$STAGE/bin/$t"
    log "warning: $t on PATH is $(command -v "$t") (not the bundle's Open MPI): $STAGE/bin goes first on PATH"
  done
  if [ -d "$STAGE/bin" ]; then export_var PATH "$STAGE/bin:$PATH"; fi
  command -v gcc >/dev/null || die "gcc not found: the image needs a C compiler (nvcc's host compiler)"
  command -v make >/dev/null || die "make not found and not installed from the bundle: $REBUNDLE"
  v=$(mpicc --version 2>&1 | head -1) || die "mpicc does not run ($v): $REBUNDLE"
  log "mpicc: $v (wraps $(mpicc -showme:command 2>/dev/null || echo '?'))"
  v=$(pkg-config --modversion hdf5-openmpi 2>&1) || die "pkg-config hdf5-openmpi fails ($v): $REBUNDLE"
  log "pkg-config hdf5-openmpi: $v"
  v=$(mpirun --version 2>&1 | head -1) || die "mpirun does not run ($v): $REBUNDLE"
  log "mpirun: $v"
  [ -e /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 ] ||
    die "OpenBLAS (OpenMP build) missing at /usr/lib/x86_64-linux-gnu/openblas-openmp: $REBUNDLE"
  [ -e /usr/include/nifti/nifti2_io.h ] || die "niftilib header /usr/include/nifti/nifti2_io.h missing: $REBUNDLE"
  # Every library and program we installed should find all it needs on THIS image. What
  # Alice links and the MPI launcher must (ldd lists their whole closure): else stop here,
  # before a long build fails obscurely; for the rest a warning is enough.
  if command -v ldd >/dev/null && [ -s "$STAGE/installed.txt" ]; then
    local f missing="" optional=""
    while IFS= read -r f; do
      [ -f "/$f" ] && [ ! -L "/$f" ] || continue
      case $f in *.so|*.so.*|usr/bin/*) ;; *) continue ;; esac
      case $f in */openmpi3/mca_*|*/hdf5/openmpi/plugins/*|*/libfabric/*|*/ucx/*|*/ibverbs/*|*/pmix/*|*/libpsm1/*|*/sasl2/*) continue ;; esac  # optional plugins
      # (ldd fails on scripts and static files: only its "not found" lines matter)
      local lacks
      lacks=$( { ldd "/$f" 2>/dev/null || true; } | awk -v f="/$f" '/not found/ {printf "%s needs %s; ", f, $1}')
      [ -n "$lacks" ] || continue
      case $f in
        */libmpi.so.*|*/libhdf5_openmpi.so.*|*/libopenblas.so.*|*/libnifti2.so.*|*/libznz.so.*|usr/bin/orterun|usr/bin/orted|usr/bin/opal_wrapper|usr/bin/make|usr/bin/pkgconf)
          missing+=$lacks ;;
        *) optional+=$lacks ;;
      esac
    done < "$STAGE/installed.txt"
    FIX="add those packages to RUNTIME_SEEDS in scripts/device_bundle.sh (or drop them from BASE_SYSTEM) and $REBUNDLE"
    [ -z "$optional" ] || log "warning: libraries not needed by Alice lack: ${optional}(to silence: $FIX)"
    [ -z "$missing" ] || die "unresolved libraries: ${missing}$FIX"
    log "ldd: Alice's libraries, mpirun and the build tools resolve every dependency"
  fi
}

# ---- cuDNN, NCCL, cuBLAS, cudart: find them wherever this image keeps them ----
search_roots() {
  local py
  echo "${ALICE_CUDA_SEARCH:-}" | tr ' ' '\n'
  [ -n "${CUDA_HOME:-}" ] && echo "$CUDA_HOME"
  [ -n "${ALICE_CUDA_SEARCH_ONLY:-}" ] && return   # tests: nothing of this machine's own
  ls -d /usr/local/cuda* 2>/dev/null || true
  echo /usr/include; echo /usr/lib/x86_64-linux-gnu; echo /usr/local/nvidia
  for py in python3 ${PYTHON:-}; do
    command -v "$py" >/dev/null || continue
    # The pip wheels (nvidia-cudnn-cu13, nvidia-nccl-cu13 ...) live under site-packages/nvidia.
    "$py" - <<'EOF' 2>/dev/null || true
import site, os
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    p = os.path.join(sp, "nvidia")
    if os.path.isdir(p):
        print(p)
EOF
  done
}

# first_file NAME...: the first file with one of these names under the search roots (an
# earlier root wins over a later one, whichever of the names it has).
first_file() {
  local r n hit
  while IFS= read -r r; do
    [ -n "$r" ] && [ -d "$r" ] || continue
    for n in "$@"; do
      hit=$(find -L "$r" -maxdepth 5 -name "$n" \( -type f -o -type l \) 2>/dev/null | sort | head -1)
      [ -n "$hit" ] && { echo "$hit"; return 0; }
    done
  done < <(search_roots | awk 'NF && !seen[$0]++')
  return 0   # nothing found: the caller says what is missing (set -e must not end us here)
}

SCRATCH_HOME=
scratch_home() {  # one include/ + lib/ folder of links, used as CUDNN_HOME / NCCL_HOME
  if [ -z "$SCRATCH_HOME" ]; then
    SCRATCH_HOME=$STAGE/cuda-extra
    rm -rf "$SCRATCH_HOME"; mkdir -p "$SCRATCH_HOME/include" "$SCRATCH_HOME/lib"
  fi
}

ld_dirs=()
# provide LABEL HEADER LIBSTEM: make HEADER and libLIBSTEM.so findable; sets PROVIDED to
# "scratch" when they had to be linked into the scratch home, "system" when the toolkit or
# the system folders have them, PROVIDED_LIBDIR to the library's own folder and
# PROVIDED_STD_INC to 1 when the header is where the Makefile looks anyway (no subshell: it
# records ld_dirs and may die).
PROVIDED= PROVIDED_LIBDIR= PROVIDED_STD_INC=
provide() {
  local label=$1 header=$2 stem=$3 hdr lib="" libdir hdrdir f
  hdr=$(first_file "$header")
  # The library of the same package as the header first (a wheel's include/ beside lib/).
  local d
  for d in lib lib64 lib/x86_64-linux-gnu; do
    [ -n "$hdr" ] && [ -d "$(dirname "$(dirname "$hdr")")/$d" ] || continue
    lib=$(ls -d "$(dirname "$(dirname "$hdr")")/$d/lib$stem.so" "$(dirname "$(dirname "$hdr")")/$d/lib$stem.so."[0-9]* 2>/dev/null | head -1 || true)
    [ -n "$lib" ] && break
  done
  [ -n "$lib" ] || lib=$(first_file "lib$stem.so" "lib$stem.so.[0-9]*")
  [ -n "$hdr" ] || die "$label header $header not found (searched the CUDA toolkit, /usr/include and the pip packages of python3 under site-packages/nvidia): install the $label wheel or set ALICE_CUDA_SEARCH to its folder"
  [ -n "$lib" ] || die "$label library lib$stem.so* not found (same places as $header): install the $label wheel or set ALICE_CUDA_SEARCH"
  hdrdir=$(dirname "$hdr"); libdir=$(dirname "$lib")
  log "$label: header $hdr, library $lib"
  ld_dirs+=("$libdir")
  # Folders the Makefile searches anyway (compared resolved: lib64 is often a link to lib).
  local std_inc=0 std_lib=0 real_inc real_lib
  real_inc=$(readlink -f "$hdrdir"); real_lib=$(readlink -f "$libdir")
  case $real_inc in /usr/include|"$(readlink -f "${CUDA_HOME:-/nonexistent}/include")") std_inc=1 ;; esac
  case $real_lib in /usr/lib/x86_64-linux-gnu|"$(readlink -f "${CUDA_HOME:-/nonexistent}/lib64")")
    [ -e "$libdir/lib$stem.so" ] && std_lib=1 ;; esac
  PROVIDED_LIBDIR=$libdir PROVIDED_STD_INC=$std_inc
  if [ $std_inc = 1 ] && [ $std_lib = 1 ]; then PROVIDED=system; return; fi
  scratch_home
  for f in "$hdrdir"/*.h; do ln -sfn "$f" "$SCRATCH_HOME/include/"; done
  for f in "$libdir/lib$stem"*.so*; do [ -e "$f" ] && ln -sfn "$f" "$SCRATCH_HOME/lib/"; done
  if [ ! -e "$SCRATCH_HOME/lib/lib$stem.so" ]; then
    # Wheels ship only libX.so.N: the link name the linker looks for is made here.
    f=$(ls "$libdir/lib$stem.so."* 2>/dev/null | sort -V | head -1)
    ln -sfn "$f" "$SCRATCH_HOME/lib/lib$stem.so"
    log "made lib$stem.so -> $f in $SCRATCH_HOME/lib"
  fi
  PROVIDED=scratch
}

setup_cuda() {
  local nvcc
  nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
  [ -n "$nvcc" ] || nvcc=$(first_file nvcc)   # e.g. a pip toolkit: site-packages/nvidia/cu13/bin
  [ -n "$nvcc" ] || die "nvcc not found on PATH or in /usr/local/cuda/bin: the image needs the CUDA toolkit (or run with USE_CUDA=0)"
  case ":$PATH:" in *":$(dirname "$nvcc"):"*) ;; *) export_var PATH "$(dirname "$nvcc"):$PATH" ;; esac
  CUDA_HOME=$(cd "$(dirname "$nvcc")/.." && pwd)
  log "nvcc: $nvcc ($("$nvcc" --version 2>/dev/null | grep -o 'release [0-9.]*' || echo '?')), CUDA_HOME=$CUDA_HOME"
  provide cuDNN cudnn.h cudnn; [ "$PROVIDED" = scratch ] && export_var CUDNN_HOME "$SCRATCH_HOME"
  provide NCCL nccl.h nccl; [ "$PROVIDED" = scratch ] && export_var NCCL_HOME "$SCRATCH_HOME"
  # The Makefile links cuBLAS, cuBLASLt and cudart from CUDA_LIBDIR (default
  # $CUDA_HOME/lib64). A toolkit that keeps them elsewhere (lib/ without lib64, a pip
  # toolkit whose wheels hold only libX.so.N) gets CUDA_LIBDIR: the libraries' own folder
  # when it has all three link names, else the scratch home, where provide() linked them all.
  local stem cuda_libdir=
  for stem in cublas cublasLt cudart; do
    [ -e "$CUDA_HOME/lib64/lib$stem.so" ] && continue
    provide "lib$stem" "$( [ $stem = cudart ] && echo cuda_runtime.h || echo cublas_v2.h)" "$stem"
    [ "$PROVIDED" = system ] && continue
    # Headers outside CUDA_HOME/include reach the compiler through the scratch include/.
    [ "$PROVIDED_STD_INC" = 1 ] || [ "${CUDNN_HOME:-}" = "$SCRATCH_HOME" ] || export_var CUDNN_HOME "$SCRATCH_HOME"
    if [ -e "$PROVIDED_LIBDIR/lib$stem.so" ] && { [ -z "$cuda_libdir" ] || [ "$cuda_libdir" = "$PROVIDED_LIBDIR" ]; }; then
      cuda_libdir=$PROVIDED_LIBDIR
    else
      cuda_libdir=$SCRATCH_HOME/lib
    fi
  done
  if [ -n "$cuda_libdir" ]; then export_var CUDA_LIBDIR "$cuda_libdir"; fi
  # cuDNN 9 dlopens its engine libraries by name at run time: their folders go on the path.
  local d ldp=${LD_LIBRARY_PATH:-}
  for d in "${ld_dirs[@]}"; do case ":$ldp:" in *":$d:"*) ;; *) ldp=$d${ldp:+:$ldp} ;; esac; done
  if [ -n "$ldp" ]; then export_var LD_LIBRARY_PATH "$ldp"; fi
}

# ---- main ----
log "repository $REPO, root ${ROOT:-/}, bundle $BUNDLE$( [ "$DRY" = 1 ] && echo ', DRY RUN')"
mkdir -p "$STAGE"
if need_mpi_hdf5; then
  install_bundle
  check_mpi_hdf5
else
  log "mpicc, hdf5-openmpi, OpenBLAS (OpenMP) and niftilib already present: bundle not needed"
fi

# Open MPI as root inside a container: allow root; without ssh/rsh the launcher refuses to
# start even local ranks unless its agent names a program that exists (never run locally);
# CMA single-copy needs ptrace rights that sandboxes withhold. Only as root: a cluster user
# sourcing this file for NCCL_HOME/CUDNN_HOME must keep Open MPI's "not enough slots" check
# and its shared-memory single copy.
if [ "$(id -u)" = 0 ]; then
  export_var OMPI_ALLOW_RUN_AS_ROOT 1
  export_var OMPI_ALLOW_RUN_AS_ROOT_CONFIRM 1
  export_var OMPI_MCA_rmaps_base_oversubscribe 1
  export_var OMPI_MCA_btl_vader_single_copy_mechanism none
fi
command -v ssh >/dev/null || command -v rsh >/dev/null || export_var OMPI_MCA_plm_rsh_agent false

if [ "$CUDA" = 1 ]; then setup_cuda; else log "CUDA discovery skipped (--skip-cuda)"; fi

mkdir -p "$(dirname "$ENV_FILE")"
{ echo "# written by scripts/device_setup.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"; printf '%s\n' "${exports[@]}"; } > "$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
log "environment written to $ENV_FILE:"; sed 's/^/  /' "$ENV_FILE"
log "done in $(( SECONDS - t_start )) s"
