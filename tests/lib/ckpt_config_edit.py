"""Edits the configuration a checkpoint stores (its `config` attribute), to stand in for a
checkpoint of another alice version in the tests:
  ckpt_config_edit.py CKPT drop KEY      the line of KEY removed (an older alice's checkpoint)
  ckpt_config_edit.py CKPT add 'K = V'   a line appended (a newer alice's key)"""
import sys

import h5py

path, action, arg = sys.argv[1:4]
with h5py.File(path, "a") as f:
    text = f.attrs["config"]
    text = text.decode() if isinstance(text, bytes) else text
    lines = text.splitlines(True)
    if action == "drop":
        kept = [l for l in lines if l.split("=")[0].strip() != arg]
        if len(kept) == len(lines):
            sys.exit(f"{path}: the stored configuration has no key {arg}")
        lines = kept
    elif action == "add":
        lines.append(arg + "\n")
    else:
        sys.exit(f"unknown action {action}: drop KEY or add 'K = V'")
    f.attrs["config"] = "".join(lines)
