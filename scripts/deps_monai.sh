#!/usr/bin/env bash
# Fetches MONAI (and einops, which its networks import) for the tests that check the project
# against MONAI itself: the exported encoder loaded strictly into MONAI's ViT, the UNETR and ViT
# references (tests/reference) against MONAI's networks with the same weights. Debian has no
# MONAI package; these are the pure-Python wheels from PyPI, pinned by version AND sha256,
# unpacked (not installed) into a project-local folder the tests put on sys.path
# (tests/reference/monai_import.py), so the system Python is left alone.
#
#   scripts/deps_monai.sh [DEST]      (default .devdeps/monai)
#
# Quick when DEST already holds these versions. Without network or pip it fails with a message;
# the MONAI checks then report themselves skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.devdeps/monai}
VERSION="monai-1.3.2 einops-0.8.2"
# name, version, the wheel's sha256 (the wheel: NAME-VERSION-py3-none-any.whl)
WHEELS=(
  "monai 1.3.2 899e2bda5e1fa00675cddbb82197dcfab4496801087d6199d474db2fa17b2452"
  "einops 0.8.2 54058201ac7087911181bfec4af6091bb59380360f069276601256a76af08193"
)
if [ -f "$DEST/monai/__init__.py" ] && [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
say() { echo "deps_monai: $*"; }
fail() { echo "deps_monai: ERROR: $*" >&2; exit 1; }

pip_cmd=()
for py in /usr/bin/python3 python3; do
  if command -v "$py" >/dev/null && "$py" -m pip --version >/dev/null 2>&1; then
    pip_cmd=("$py" -m pip)
    break
  fi
done
[ ${#pip_cmd[@]} -gt 0 ] || fail "no pip (python3 -m pip) to download $VERSION: install python3-pip"

tmp=$(mktemp -d /tmp/deps-monai.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/unpacked"
for w in "${WHEELS[@]}"; do
  read -r name version sha <<<"$w"
  spec=$name==$version wheel=$name-$version-py3-none-any.whl
  say "downloading $spec"
  "${pip_cmd[@]}" download --quiet --no-deps --only-binary=:all: -d "$tmp" "$spec" \
    > "$tmp/pip.log" 2>&1 ||
    { tail -5 "$tmp/pip.log" >&2; fail "pip download $spec failed (network? PyPI reachable?)"; }
  [ -f "$tmp/$wheel" ] || fail "pip did not produce $wheel"
  got=$(sha256sum "$tmp/$wheel" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || fail "$wheel has sha256 $got, expected $sha (a changed upload?): not used"
  # a wheel is a zip of the package folders: unpacked with Python's zipfile (unzip may be missing)
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$tmp/$wheel" "$tmp/unpacked"
done
[ -f "$tmp/unpacked/monai/__init__.py" ] || fail "the MONAI wheel has no monai/__init__.py"
echo "$VERSION" > "$tmp/unpacked/VERSION"
# Swap in whole: a failed run leaves the previous copy.
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST.old"; [ -e "$DEST" ] && mv "$DEST" "$DEST.old"
mv -T "$tmp/unpacked" "$DEST" && rm -rf "$DEST.old"   # -T: never into a DEST a concurrent run made
say "$DEST: $VERSION ($(du -sk "$DEST" | cut -f1) KiB)"
