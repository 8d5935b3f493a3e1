"""Predictions written on a source's grid (the inference output path, prediction_write_original,
through tests/tools/label_roundtrip; the label file and the 4-D probabilities) carry the source's
header transforms as nibabel reads them:
the sform (affine and code), the qform (its own quaternion, offsets, pixdim and qfac, and code)
and the unit. Sources:
  - sform (code 2, a registration) and qform (code 1, scanner) 12 mm and 10 degrees apart: the
    prediction's qform is the source's, not the sform's rigid part (which a reader preferring
    the qform, ITK before 5, would have placed 12 mm away);
  - the same in metres (xyz_units 1): both transforms in metres, as the source;
  - sform only (qform code 0): the qform code stays 0, the sform as the source.
The packed label mapped back must equal the source label voxel for voxel (the packing keeps
the source's voxels here: spacing equal to the source's, RAS axes)."""
import os
import subprocess
import sys
import tempfile

try:
    import nibabel as nib
    import numpy as np
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALICE = os.environ.get("ALICE", os.path.join(ROOT, "bin", "alice"))
TOOL = os.path.join(ROOT, os.environ.get("BUILD", "build"), "tools", "label_roundtrip")
if not os.access(ALICE, os.X_OK) or not os.path.exists(TOOL):
    print(f"skip: {ALICE} or {TOOL} not built")
    sys.exit(77)
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def rotation_z(deg):
    t = np.radians(deg)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


shape = (24, 20, 16)
image = np.full(shape, -900, np.int16)
image[3:21, 3:17, 2:14] = 40                       # a body the crop keeps whole
label = np.zeros(shape, np.uint8)
label[5:12, 5:11, 4:10] = 1
label[13:19, 8:15, 6:12] = 3
sform = np.diag([2.0, 2.0, 2.0, 1.0])
sform[:3, 3] = [-20.0, -18.0, -14.0]
qform = np.eye(4)
qform[:3, :3] = rotation_z(10) * 2.0
qform[:3, 3] = sform[:3, 3] + [12.0, 0.0, 0.0]

variants = {
    "two_transforms": dict(sform=(sform, 2), qform=(qform, 1), units="mm"),
    "metres": dict(sform=(sform, 2), qform=(qform, 1), units="meter"),
    "sform_only": dict(sform=(sform, 1), qform=(None, 0), units="mm"),
}
with tempfile.TemporaryDirectory(prefix="alice_pred_header_") as tmp:
    for name, v in variants.items():
        src = os.path.join(tmp, name)
        for sub in ("imagesTr", "labelsTr"):
            os.makedirs(os.path.join(src, sub))
        scale = 1e-3 if v["units"] == "meter" else 1.0
        paths = {}
        for kind, data, file in (("image", image, f"imagesTr/{name}_0000.nii.gz"),
                                 ("label", label, f"labelsTr/{name}.nii.gz")):
            img = nib.Nifti1Image(data, None)
            s_aff = v["sform"][0].copy()
            s_aff[:3] *= scale
            img.set_sform(s_aff, code=v["sform"][1])
            if v["qform"][0] is not None:
                q_aff = v["qform"][0].copy()
                q_aff[:3] *= scale
                img.set_qform(q_aff, code=v["qform"][1])
            else:
                img.set_qform(None, code=0)
            img.header.set_xyzt_units(xyz=v["units"])
            paths[kind] = os.path.join(src, file)
            nib.save(img, paths[kind])
        ds = os.path.join(tmp, f"{name}.h5")
        r = subprocess.run([ALICE, "pack", "--input", src, "--out", ds, "spacing=2,2,2",
                            "num_folds=1"], capture_output=True, text=True)
        check(r.returncode == 0, f"{name}: pack {r.stderr[-300:]}")
        out = os.path.join(tmp, f"{name}_back")
        os.makedirs(out)
        r = subprocess.run([TOOL, ds, out, "--probs"], capture_output=True, text=True)
        check(r.returncode == 0, f"{name}: label_roundtrip {r.stderr[-300:]}")
        src_img = nib.load(paths["label"])
        back = nib.load(os.path.join(out, f"{name}.nii.gz"))
        sh, bh = src_img.header, back.header
        check(np.array_equal(np.asarray(back.dataobj), label),
              f"{name}: the packed label mapped back equals the source label")
        check(np.allclose(back.get_sform(), src_img.get_sform(), atol=1e-5) and
              int(bh["sform_code"]) == int(sh["sform_code"]),
              f"{name}: sform and code {int(bh['sform_code'])} as the source's")
        check(int(bh["qform_code"]) == int(sh["qform_code"]),
              f"{name}: qform code {int(bh['qform_code'])} as the source's {int(sh['qform_code'])}")
        if int(sh["qform_code"]) > 0:
            fields = ["quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"]
            same = all(abs(float(bh[f]) - float(sh[f])) < 1e-6 for f in fields)
            same &= np.allclose(bh["pixdim"][:4], sh["pixdim"][:4], atol=1e-6)
            check(same and np.allclose(back.get_qform(), src_img.get_qform(), atol=1e-5),
                  f"{name}: qform as the source's (offset {np.round(back.get_qform()[:3, 3], 4)}"
                  f" vs {np.round(src_img.get_qform()[:3, 3], 4)})")
        check(bh.get_xyzt_units()[0] == sh.get_xyzt_units()[0],
              f"{name}: unit {bh.get_xyzt_units()[0]} as the source's")
        probs = nib.load(os.path.join(out, f"{name}_probs.nii.gz"))
        ph = probs.header
        check(probs.shape == label.shape + (2,) and
              np.array_equal(np.asarray(probs.dataobj)[..., 1] > 0.5, label > 0) and
              np.allclose(probs.get_sform(), src_img.get_sform(), atol=1e-5) and
              int(ph["qform_code"]) == int(sh["qform_code"]) and
              (int(sh["qform_code"]) == 0 or
               np.allclose(probs.get_qform(), src_img.get_qform(), atol=1e-5)),
              f"{name}: the probabilities' file has the source's grid, sform and qform")
print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
