"""MONAI for the tests that check the project against MONAI itself: the pinned copy that
scripts/deps_monai.sh (run by `make test`'s dependency step) unpacks into .devdeps/monai, or an
installed MONAI. monai() returns the module, or None with the reason printed: the caller then
reports its MONAI checks skipped (exit 77), never passed."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PINNED = os.path.join(REPO, ".devdeps", "monai")


def monai():
    if os.path.isdir(PINNED) and PINNED not in sys.path:
        sys.path.insert(0, PINNED)
    try:
        import monai as m
        from monai.networks import nets  # noqa: F401  (the part the tests use)
    except ImportError as e:
        print(f"skip: MONAI not importable ({e}); scripts/deps_monai.sh fetches it")
        return None
    return m
