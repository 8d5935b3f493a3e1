#!/usr/bin/env bash
# Fetches NVIDIA's header-only cudnn-frontend (C++17 headers over cuDNN's graph API), which
# cuda/cuda_attention_cudnn.cu needs for attention_kernel = cudnn, into a project-local folder
# the Makefile finds by itself (CUDNN_FRONTEND_INCLUDE, default .devdeps/cudnn-frontend/include;
# .devdeps is git-ignored and travels to the GPU machine, scripts/device_bundle.sh).
#
#   scripts/deps_cudnn_frontend.sh [DEST]      (default .devdeps/cudnn-frontend)
#
# The headers come from PyPI's wheel nvidia-cudnn-frontend (its include/ folder; the Python
# module beside it is not used), pinned by version AND by the wheel's sha256, downloaded with
# pip's ordinary client (no install) for one fixed platform tag, so the file is the same on any
# machine. Quick when DEST already holds this version. Without network or pip it fails with a
# message; the build then compiles the variant that refuses attention_kernel = cudnn.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.devdeps/cudnn-frontend}
VERSION=1.32.0
WHEEL=nvidia_cudnn_frontend-$VERSION-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
SHA256=c6006556017a4d1c914c52a556c71b1267f2d6a0500f742e7b4edef539878df0

if [ -f "$DEST/include/cudnn_frontend.h" ] && [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
say() { echo "deps_cudnn_frontend: $*"; }
fail() { echo "deps_cudnn_frontend: ERROR: $*" >&2; exit 1; }

pip_cmd=()
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null && "$py" -m pip --version >/dev/null 2>&1; then pip_cmd=("$py" -m pip); break; fi
done
[ ${#pip_cmd[@]} -gt 0 ] || fail "no pip (python3 -m pip) to download nvidia-cudnn-frontend==$VERSION: install python3-pip, or put the wheel's include/ folder at $DEST/include"

tmp=$(mktemp -d /tmp/cudnn-frontend.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
say "downloading nvidia-cudnn-frontend==$VERSION (headers for attention_kernel = cudnn)"
"${pip_cmd[@]}" download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
  --python-version 3.11 --implementation cp --abi cp311 -d "$tmp" "nvidia-cudnn-frontend==$VERSION" \
  > "$tmp/pip.log" 2>&1 || { tail -5 "$tmp/pip.log" >&2; fail "pip download failed (network? PyPI reachable?)"; }
[ -f "$tmp/$WHEEL" ] || fail "pip did not produce $WHEEL (got: $(ls "$tmp" | grep -v pip.log | tr '\n' ' '))"
got=$(sha256sum "$tmp/$WHEEL" | cut -d' ' -f1)
[ "$got" = "$SHA256" ] || fail "$WHEEL has sha256 $got, expected $SHA256 (a changed upload?): not used"

# Only include/ is kept (3 MiB); unpacked with Python's zipfile (unzip may be missing).
mkdir -p "$tmp/unpacked"
python3 - "$tmp/$WHEEL" "$tmp/unpacked" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("include/")])
EOF
[ -f "$tmp/unpacked/include/cudnn_frontend.h" ] || fail "$WHEEL has no include/cudnn_frontend.h"
echo "$VERSION" > "$tmp/unpacked/VERSION"
echo "nvidia-cudnn-frontend $VERSION ($WHEEL, sha256 $SHA256): include/ only, by scripts/deps_cudnn_frontend.sh" \
  > "$tmp/unpacked/README"
# Swap in whole: a failed run leaves the previous copy.
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST.old"; [ -e "$DEST" ] && mv "$DEST" "$DEST.old"
mv -T "$tmp/unpacked" "$DEST" && rm -rf "$DEST.old"   # -T: never into a DEST a concurrent run made
say "$DEST/include: cudnn-frontend $VERSION ($(du -sk "$DEST" | cut -f1) KiB)"
