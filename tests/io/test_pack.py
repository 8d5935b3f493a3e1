"""alice phantom + alice pack end to end, against nibabel/scipy/h5py references.

- phantom: same seed gives the same bytes; every organ present in full-coverage cases; HU by
  tissue plausible.
- pack: h5py read-back equals an independent nibabel + scipy reimplementation of the
  preprocessing (reorient, trilinear/nearest resampling, crop box from the attributes);
  attributes and index consistent; 1-rank and 2-rank packs hold identical content.
- bad input: corrupt .nii.gz, unsupported datatype, shape and affine mismatch, label values
  outside 0..13, NaN voxels, a singular affine, empty folder, unwritable output, existing output
  without --force: each a clear error naming the case and the problem; --keep-going packs the
  rest and lists what was skipped, and commits nothing when every case was skipped.
- header units: a case stored in metres or microns packs like the same case in mm; voxels far
  below the target spacing, or a target spacing typed far too fine, are refused naming the case
  before any large allocation; an image whose values span under 100 (not HU) is named.
- temporary files: each pack writes its own (<out>.tmp.<host>.<pid>), so another pack's of the
  same --out is left alone and named (removed when it is a pack's of this host whose process is
  gone), and two packs of one --out at once both finish with a complete data set."""
import filecmp
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import h5py
import nibabel as nib
import numpy as np
from scipy import ndimage

ALICE = os.environ.get("ALICE", "bin/alice")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(*args, np_=1):
    cmd = ([ "mpirun", "-np", str(np_), "--oversubscribe"] if np_ > 1 else []) + [ALICE, *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def leftovers(path):
    """Temporary files of packs of `path` left in its folder."""
    d, base = os.path.split(path)
    return [f for f in os.listdir(d or ".") if f.startswith(os.path.basename(base) + ".tmp")]


def h5_content(path):
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                out[f"{name}@{k}"] = np.asarray(v)
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        f.visititems(visit)
        for k, v in f.attrs.items():
            out[f"/@{k}"] = np.asarray(v)
    return out


def same_content(a, b):
    if a.keys() != b.keys():
        return False
    return all(np.array_equal(a[k], b[k]) for k in a)


def reference_pack(img_path, lab_path, grp):
    """Independent reimplementation: world position of each packed voxel -> source voxel
    coordinate -> scipy map_coordinates (order 1 image, order 0 label)."""
    img = nib.load(img_path)
    A = np.asarray(grp.attrs["affine"])
    shape = grp["image"].shape
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), 0).reshape(3, -1)
    src = (np.linalg.inv(img.affine) @ A @ np.vstack([idx, np.ones(idx.shape[1])]))[:3]
    ref_img = ndimage.map_coordinates(img.get_fdata(), src, order=1, mode="nearest").reshape(shape)
    lab = nib.load(lab_path).get_fdata()
    # nearest: round half up, as documented in io/geometry.h
    ri = np.clip(np.floor(src + 0.5 + 1e-9).astype(int), 0, np.array(lab.shape)[:, None] - 1)
    ref_lab = lab[ri[0], ri[1], ri[2]].reshape(shape)
    return ref_img, ref_lab


def clamped_hu(tmp, img, lab, aff):
    """Values beyond int16 (a scan in another scaling): clamped to -32768..32767 in the packed
    image, with a warning naming the case and the count of voxels that were."""
    d = os.path.join(tmp, "clamp")
    os.makedirs(d)
    hot = img.astype(np.float32).copy()
    hot.flat[:5] = 40000.0
    hot.flat[-5:] = 1e20           # beyond long: lrintf alone gives LONG_MIN, clamped to -32768
    nib.save(nib.Nifti1Image(hot, aff), os.path.join(d, "case_0000.nii.gz"))
    nib.save(nib.Nifti1Image(lab, aff), os.path.join(d, "case.nii.gz"))
    out = os.path.join(tmp, "clamp.h5")
    r = run("pack", "--input", d, "--out", out, "spacing=1,1,1")
    ok = r.returncode == 0 and "case case: " in r.stderr and "beyond the int16 range" in r.stderr
    if ok:
        with h5py.File(out, "r") as f:
            packed = f["cases/case/image"][()]
            ok = int(packed.max()) == 32767 and int(packed.min()) >= int(img.min()) - 1
    check(ok, f"HU beyond int16 clamped with a warning ({r.stderr.strip()[-160:]})")


def header_units(tmp, img, lab, aff):
    """NIfTI xyz_units: a case stored in metres or microns (pixdim and offsets 1000x smaller or
    larger, xyz_units saying so) packs to the same arrays and affines as the same case in mm (in
    metres it was one voxel, in microns an allocation failure). Voxel sizes far below any
    target spacing (metre numbers labelled mm) are refused, naming the unit as a cause; a
    spacing typo (0.01 mm for a ~12 mm phantom) would need far more memory than the machine
    has: refused naming the case and the GiB, before any allocation."""
    units = os.path.join(tmp, "units")
    cases = (("mm", 1.0, "mm"), ("m", 1e-3, "meter"), ("um", 1e3, "micron"), ("tiny", 1e-3, "mm"))
    for sub, scale, code in cases:
        os.makedirs(os.path.join(units, sub))
        a = aff.copy()
        a[:3, :] *= scale
        for name, data in (("case_0000.nii.gz", img), ("case.nii.gz", lab)):
            im = nib.Nifti1Image(data, a)
            im.header.set_xyzt_units(xyz=code)
            nib.save(im, os.path.join(units, sub, name))
    outs = {}
    for sub in ("mm", "m", "um"):
        outs[sub] = os.path.join(tmp, f"units_{sub}.h5")
        r = run("pack", "--input", os.path.join(units, sub), "--out", outs[sub])
        check(r.returncode == 0, f"pack of the case in {sub} ({r.stderr.strip()[-160:]})")
    for sub in ("m", "um"):
        same = False
        if os.path.exists(outs["mm"]) and os.path.exists(outs[sub]):
            with h5py.File(outs["mm"], "r") as f, h5py.File(outs[sub], "r") as g:
                same = all(np.array_equal(f[f"cases/case/{v}"][()], g[f"cases/case/{v}"][()])
                           for v in ("image", "label")) and all(
                    np.allclose(f["cases/case"].attrs[k], g["cases/case"].attrs[k], atol=1e-3)
                    for k in ("affine", "original_affine"))
        check(same, f"xyz_units {sub}: the same packed arrays and affines (mm) as in mm")
    # an image in [0, 1] (a float normalisation): packed, with a warning that it is not HU
    norm = os.path.join(units, "norm")
    os.makedirs(norm)
    scaled = (img.astype(np.float32) - img.min()) / float(img.max() - img.min())
    nib.save(nib.Nifti1Image(scaled, aff), os.path.join(norm, "case_0000.nii.gz"))
    r = run("pack", "--input", norm, "--out", os.path.join(tmp, "norm.h5"))
    check(r.returncode == 0 and "not CT in Hounsfield units" in r.stderr and
          "case case" in r.stderr, f"an image in [0, 1]: warned ({r.stderr.strip()[-160:]})")
    r = run("pack", "--input", os.path.join(units, "mm"), "--out", os.path.join(tmp, "hu.h5"))
    check(r.returncode == 0 and "Hounsfield" not in r.stderr, "a CT in HU: no such warning")
    r = run("pack", "--input", os.path.join(units, "tiny"), "--out", os.path.join(tmp, "tiny.h5"))
    check(r.returncode != 0 and "case case" in r.stderr and "keeps 1 voxel(s)" in r.stderr and
          "unit" in r.stderr, f"voxels of 0.01 mm: refused ({r.stderr.strip()[-200:]})")
    r = run("pack", "--input", os.path.join(units, "mm"), "--out", os.path.join(tmp, "typo.h5"),
            "spacing=0.01,0.01,0.01")
    check(r.returncode != 0 and "case case" in r.stderr and "GiB" in r.stderr and
          "spacing key" in r.stderr and "out of host memory" not in r.stderr,
          f"a spacing typo: refused before allocating ({r.stderr.strip()[-200:]})")


def temporary_files(tmp, ph):
    """Another job's temporary file of the same --out is neither truncated nor removed, and is
    named; two packs of one --out at once (a resubmitted sbatch) each end with status 0 and
    leave a complete data set, one of the two case sets, and no temporary file."""
    out = os.path.join(tmp, "shared.h5")
    other = out + ".tmp"   # the name every pack wrote before each had its own
    with open(other, "wb") as f:
        f.write(b"another pack's bytes")
    r = run("pack", "--input", ph, "--out", out, np_=2)
    kept = False
    if os.path.exists(other):   # an old pack renamed it as its own
        with open(other, "rb") as f:
            kept = f.read() == b"another pack's bytes"
    check(r.returncode == 0 and kept and other in r.stderr and leftovers(out) == [
          os.path.basename(other)], "another pack's temporary file of the same --out is left as "
          f"it was and named ({r.stderr.strip()[-160:]})")
    if os.path.exists(other):
        os.remove(other)
    # this host's pack killed before its rename (its process gone): its file is removed; one of
    # a process still running here (this test's) is left and named
    host = socket.gethostname().replace("/", "_").replace(" ", "_")
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead, live = (f"{out}.tmp.{host}.{pid}" for pid in (gone.pid, os.getpid()))
    for path in (dead, live):
        with open(path, "wb") as f:
            f.write(b"x" * 4096)
    r = run("pack", "--input", ph, "--out", out, "--force")
    check(r.returncode == 0 and not os.path.exists(dead) and f"removed {dead}" in r.stderr
          and os.path.exists(live) and live in r.stderr and leftovers(out) == [
              os.path.basename(live)],
          "a dead pack's temporary file on this host is removed, a live one's named "
          f"({r.stderr.strip()[-200:]})")
    os.remove(live)
    few = os.path.join(tmp, "few")
    os.makedirs(os.path.join(few, "imagesTr"))
    os.makedirs(os.path.join(few, "labelsTr"))
    for c in ("case0001", "case0002"):
        shutil.copy(f"{ph}/imagesTr/{c}_0000.nii.gz", f"{few}/imagesTr/")
        shutil.copy(f"{ph}/labelsTr/{c}.nii.gz", f"{few}/labelsTr/")
    # the case sets each pack would write, from single packs
    sets = {}
    r = run("pack", "--input", few, "--out", os.path.join(tmp, "few.h5"))
    check(r.returncode == 0, f"pack of two cases ({r.stderr.strip()[-120:]})")
    for name, path in (("all", out), ("few", os.path.join(tmp, "few.h5"))):
        with h5py.File(path, "r") as f:
            sets[name] = sorted(n.decode() for n in f["index/name"][()])
    procs = [subprocess.Popen([ALICE, "pack", "--input", src, "--out", out, "--force"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for src in (ph, few)]
    results = [p.communicate() + (p.returncode,) for p in procs]
    complete = False
    try:
        with h5py.File(out, "r") as f:
            names = sorted(n.decode() for n in f["index/name"][()])
            complete = names in sets.values() and all(
                f[f"cases/{c}/{v}"][()].size > 0 for c in names for v in ("image", "label"))
    except (OSError, KeyError) as e:
        print(f"  read-back: {e}")
    check(all(rc == 0 for _, _, rc in results) and complete and not leftovers(out),
          "two packs of one --out at once: both status 0, a complete data set, no temporary file "
          f"({[rc for _, _, rc in results]}, {[e.strip()[-100:] for _, e, _ in results]})")


def main():
    tmp = tempfile.mkdtemp(prefix="alice_pack_")
    ph = os.path.join(tmp, "ph")
    r = run("phantom", "--out", ph, "--cases", "3", "--seed", "11")
    check(r.returncode == 0, f"alice phantom runs {r.stderr[-300:]}")
    r2 = run("phantom", "--out", os.path.join(tmp, "ph2"), "--cases", "3", "--seed", "11")
    same = all(filecmp.cmp(os.path.join(ph, d, f), os.path.join(tmp, "ph2", d, f), shallow=False)
               for d in ("imagesTr", "labelsTr") for f in os.listdir(os.path.join(ph, d)))
    check(r2.returncode == 0 and same, "phantom: same seed, same bytes")
    r3 = run("phantom", "--out", os.path.join(tmp, "ph3"), "--cases", "1", "--seed", "12")
    differs = not filecmp.cmp(os.path.join(ph, "imagesTr", "case0000_0000.nii.gz"),
                              os.path.join(tmp, "ph3", "imagesTr", "case0000_0000.nii.gz"), shallow=False)
    check(r3.returncode == 0 and differs, "phantom: another seed, another volume")

    # plausibility, on more cases written by 2 ranks
    pl = os.path.join(tmp, "plaus")
    r = run("phantom", "--out", pl, "--cases", "6", "--seed", "3", np_=2)
    check(r.returncode == 0, f"phantom with 2 ranks {r.stderr[-300:]}")
    full = 0
    for c in range(6):
        img = nib.load(os.path.join(pl, "imagesTr", f"case{c:04d}_0000.nii.gz"))
        lab = np.asarray(nib.load(os.path.join(pl, "labelsTr", f"case{c:04d}.nii.gz")).dataobj)
        a = np.asarray(img.dataobj).astype(np.float32)
        extent = img.shape[2] * img.header.get_zooms()[2]
        present = set(np.unique(lab)) - {0}
        if extent > 250:
            full += 1
            check(present == set(range(1, 14)), f"case{c}: full coverage ({extent:.0f} mm) has all 13 organs, missing {set(range(1, 14)) - present}")
        med = {k: np.median(a[lab == k]) for k in present}
        if 1 in med:
            check(30 < med[1] < 140, f"case{c}: liver median {med[1]:.0f} HU in 30..140")
        if 5 in med:
            check(20 < med[5] < 350, f"case{c}: aorta median {med[5]:.0f} HU in 20..350")
        corners = np.concatenate([a[:4, :4].ravel(), a[-4:, -4:].ravel()])
        check(np.median(corners) < -900, f"case{c}: air outside the body {np.median(corners):.0f} HU")
        check((a > 400).sum() > 100, f"case{c}: bone present (> 400 HU)")
        if 9 in med:
            check(med[9] < 30, f"case{c}: gallbladder (bile) median {med[9]:.0f} HU below 30")
    check(full >= 3, f"{full} of 6 phantom cases cover the full abdomen")

    # pack: 1 rank vs 2 ranks, and the read-back against the reference
    out1, out2 = os.path.join(tmp, "one.h5"), os.path.join(tmp, "two.h5")
    r = run("pack", "--input", ph, "--out", out1, "num_folds=3")
    check(r.returncode == 0 and os.path.exists(out1) and not leftovers(out1),
          f"pack 1 rank {r.stderr[-500:]}")
    r = run("pack", "--input", ph, "--out", out2, "num_folds=3", np_=2)
    check(r.returncode == 0, f"pack 2 ranks {r.stderr[-500:]}")
    check(same_content(h5_content(out1), h5_content(out2)), "1-rank and 2-rank packs hold identical content")
    with h5py.File(out1, "r") as f:
        check(f.attrs["format"] == b"alice-dataset" or f.attrs["format"] == "alice-dataset", "format attribute")
        check(np.allclose(f.attrs["spacing"], [1.5, 1.5, 2.0]), "root spacing = default 1.5,1.5,2.0")
        names = [n.decode() for n in f["index/name"][()]]
        check(names == ["case0000", "case0001", "case0002"], f"index names {names}")
        folds = f["index/fold"][()]
        check(set(folds) <= {0, 1, 2} and len(set(folds)) == 3, f"3 folds assigned {folds}")
        for i, name in enumerate(names):
            g = f["cases"][name]
            check(tuple(f["index/shape"][i]) == g["image"].shape, f"{name}: index shape matches")
            check(g["image"].dtype == np.int16 and g["label"].dtype == np.uint8, f"{name}: dtypes")
            check(g["image"].compression == "gzip" and g["image"].shuffle and g["image"].chunks,
                  f"{name}: chunked, shuffled, deflated")
            A = np.asarray(g.attrs["affine"])
            check(np.allclose(np.linalg.norm(A[:3, :3], axis=0), [1.5, 1.5, 2.0]) and
                  np.allclose(A[:3, :3], np.diag(np.diag(A[:3, :3]))) and (np.diag(A)[:3] > 0).all(),
                  f"{name}: packed affine is RAS at 1.5,1.5,2.0")
            src_img = g.attrs["source_image"]
            src_img = src_img.decode() if isinstance(src_img, bytes) else src_img
            src_lab = g.attrs["source_label"]
            src_lab = src_lab.decode() if isinstance(src_lab, bytes) else src_lab
            check(os.path.isabs(src_img) and (not src_lab or os.path.isabs(src_lab)),
                  f"{name}: source paths recorded absolute ({src_img})")
            orig = nib.load(src_img)
            check(np.allclose(g.attrs["original_affine"], orig.affine, atol=1e-4) and
                  tuple(g.attrs["original_shape"]) == orig.shape, f"{name}: original shape and affine")
            ref_img, ref_lab = reference_pack(src_img, src_lab, g)
            d = np.abs(g["image"][()].astype(np.float64) - ref_img)
            check(d.max() <= 1.0, f"{name}: image equals nibabel+scipy trilinear (max diff {d.max():.2f} HU)")
            mism = (g["label"][()] != ref_lab).mean()
            check(mism < 1e-3, f"{name}: label equals nearest-neighbour reference (mismatch {mism:.2e})")
            # the crop only removed air: nothing labelled was lost
            vol_src = (np.asarray(nib.load(src_lab).dataobj) > 0).sum() * np.prod(orig.header.get_zooms())
            vol_pk = (g["label"][()] > 0).sum() * 1.5 * 1.5 * 2.0
            check(abs(vol_pk - vol_src) / vol_src < 0.03, f"{name}: labelled volume kept ({vol_pk/1e3:.0f} vs {vol_src/1e3:.0f} mL)")

    # bad input
    bad = os.path.join(tmp, "bad")
    os.makedirs(bad)
    base_img = nib.load(os.path.join(ph, "imagesTr", "case0000_0000.nii.gz"))
    base_lab = nib.load(os.path.join(ph, "labelsTr", "case0000.nii.gz"))
    small = np.asarray(base_img.dataobj)[::4, ::4, ::4]
    small_lab = np.asarray(base_lab.dataobj)[::4, ::4, ::4]
    aff = base_img.affine.copy()
    aff[:3, :3] *= 4

    def write_case(name, img, lab, img_aff=aff, lab_aff=aff, dtype=None):
        nib.save(nib.Nifti1Image(img, img_aff, dtype=dtype), os.path.join(bad, f"{name}_0000.nii.gz"))
        if lab is not None:
            nib.save(nib.Nifti1Image(lab, lab_aff), os.path.join(bad, f"{name}.nii.gz"))

    write_case("good", small, small_lab)
    write_case("nolabel", small, None)
    raw = open(os.path.join(bad, "good_0000.nii.gz"), "rb").read()
    open(os.path.join(bad, "corrupt_0000.nii.gz"), "wb").write(raw[: len(raw) // 3])
    write_case("complex", small.astype(np.complex64), small_lab)
    write_case("shape", small, small_lab[:-1])
    shifted = aff.copy()
    shifted[2, 3] += 30
    write_case("affine", small, small_lab, lab_aff=shifted)
    stretched = aff.copy()
    stretched[0, 0] *= 1.5
    write_case("spacing", small, small_lab, lab_aff=stretched)
    # thin slices far from the scanner's centre (0.7 x 0.7 x 0.5 mm at z = -900): a label one
    # slice off (0.5 mm) is refused; header rounding (1e-5 mm) is not
    thin = np.diag([0.7, 0.7, 0.5, 1.0])
    thin[:3, 3] = [-20.0, -30.0, -900.0]
    one_slice = thin.copy()
    one_slice[2, 3] += 0.5
    write_case("oneslice", small, small_lab, img_aff=thin, lab_aff=one_slice)
    rounded = thin.copy()
    rounded[:3, 3] += 1e-5
    write_case("rounded", small, small_lab, img_aff=thin, lab_aff=rounded)
    lab20 = small_lab.copy()
    lab20[lab20 == 1] = 20
    write_case("labelrange", small, lab20)
    # a label resampled with linear interpolation: in range, but not a class id
    labfrac = small_lab.astype(np.float32)
    labfrac[labfrac == 1] = 0.9999
    write_case("fractional", small, labfrac)
    # one axial slice saved as its own file: a 2D image, not a volume
    write_case("slice", small[:, :, :1], small_lab[:, :, :1])
    nanimg = small.astype(np.float32)
    nanimg[3, 3, 3] = np.nan
    write_case("nan", nanimg, small_lab)
    # a sform with a zero column (no qform): spacing 0 along z, which crashed the resampling
    for fname, data in (("singular_0000.nii.gz", small), ("singular.nii.gz", small_lab)):
        img = nib.Nifti1Image(data, aff)
        hdr = img.header
        hdr.set_qform(None, code=0)
        srow = aff.copy()
        srow[:3, 2] = 0.0
        hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = srow[0], srow[1], srow[2]
        hdr["sform_code"] = 1
        nib.save(nib.Nifti1Image(data, None, header=hdr), os.path.join(bad, fname))
    expect = {"corrupt": "truncated or corrupt", "complex": "unsupported NIfTI datatype",
              "shape": "does not match the image shape",
              "affine": "does not match the image affine (entry [2][3] (origin, mm)",
              "spacing": "does not match the image affine (entry [0][0] (direction x spacing)",
              "oneslice": "does not match the image affine (entry [2][3] (origin, mm)",
              "labelrange": "outside the label set",
              "fractional": "which is not an integer class id",
              "slice": "a 2D image",
              "nan": "NaN/inf",
              "singular": "the affine is singular"}
    only = os.path.join(tmp, "only")
    for case, phrase in expect.items():
        shutil.rmtree(only, ignore_errors=True)
        os.makedirs(only)
        for f in os.listdir(bad):
            if f.startswith(case + "_") or f == case + ".nii.gz":
                shutil.copy(os.path.join(bad, f), only)
        o = os.path.join(tmp, f"{case}.h5")
        r = run("pack", "--input", only, "--out", o)
        check(r.returncode != 0 and f"case {case}" in r.stderr and phrase in r.stderr
              and not os.path.exists(o) and not leftovers(o),
              f"{case}: refused, message names case and problem: {r.stderr.strip().splitlines()[0][:160] if r.stderr else ''}")
    o = os.path.join(tmp, "keep.h5")
    r = run("pack", "--input", bad, "--out", o, "--keep-going", np_=2)
    ok = r.returncode == 0 and os.path.exists(o)
    if ok:
        with h5py.File(o, "r") as f:
            names = sorted(n.decode() for n in f["index/name"][()])
            ok = names == ["good", "nolabel", "rounded"] and "label" not in f["cases/nolabel"]
    check(ok and all(f"case {c}" in r.stdout for c in expect) and "skipped 11 case(s)" in r.stdout,
          f"--keep-going packs the good cases (a label's affine rounded by 1e-5 mm among them) "
          f"and lists the 11 skipped ({r.stdout[-200:]!r})")
    # every case skipped: nothing is committed, an existing data set under --force included
    allbad = os.path.join(tmp, "allbad")
    os.makedirs(allbad)
    for f in os.listdir(bad):
        if f.startswith(("corrupt", "nan", "singular")):
            shutil.copy(os.path.join(bad, f), allbad)
    before = h5_content(o)
    r = run("pack", "--input", allbad, "--out", o, "--keep-going", "--force", np_=2)
    check(r.returncode != 0 and "skipped every case (3" in r.stderr and
          same_content(before, h5_content(o)) and not leftovers(o),
          f"--keep-going with every case bad: status {r.returncode}, the existing file kept "
          f"({r.stderr.strip().splitlines()[-1][:140] if r.stderr else ''})")
    header_units(tmp, small, small_lab, aff)
    clamped_hu(tmp, small, small_lab, aff)
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty)
    r = run("pack", "--input", empty, "--out", os.path.join(tmp, "e.h5"))
    check(r.returncode != 0 and "no images found" in r.stderr, f"empty folder: {r.stderr.strip()[:120]}")
    # a key pack does not read (label_set: a data set records no label set) is refused, not
    # silently dropped for eval to score with its default organ names
    r = run("pack", "--input", ph, "--out", os.path.join(tmp, "k.h5"), "label_set=btcv")
    check(r.returncode == 2 and "'label_set=btcv' sets a key alice pack does not use" in r.stderr
          and not os.path.exists(os.path.join(tmp, "k.h5")),
          f"a key pack does not use refused: {r.stderr.strip()[:120]}")
    r = run("pack", "--input", ph, "--out", "/proc/alice_cannot_write/x.h5")
    check(r.returncode != 0 and "cannot create" in r.stderr, f"unwritable output: {r.stderr.strip()[:120]}")
    r = run("pack", "--input", ph, "--out", out1)
    check(r.returncode != 0 and "--force" in r.stderr, f"existing output kept without --force: {r.stderr.strip()[:120]}")
    r = run("pack", "--input", ph, "--out", tmp, "--force")
    check(r.returncode != 0 and "is a directory" in r.stderr and "[1/" not in r.stdout,
          f"--out naming a directory refused before packing: {r.stderr.strip()[:120]}")
    before = h5_content(out1)
    check(same_content(before, h5_content(out1)), "existing output untouched")
    # a label that is a link to nothing: refused (the case was packed unlabelled, silently)
    dang = os.path.join(tmp, "dangling")
    os.makedirs(dang)
    shutil.copy(os.path.join(bad, "good_0000.nii.gz"), dang)
    os.symlink(os.path.join(tmp, "gone.nii.gz"), os.path.join(dang, "good.nii.gz"))
    r = run("pack", "--input", dang, "--out", os.path.join(tmp, "dang.h5"))
    check(r.returncode != 0 and "symbolic link to nothing" in r.stderr,
          f"dangling label link refused: {r.stderr.strip()[-120:]}")
    # a label that is a folder (an archive unpacked in place): refused, not packed unlabelled
    os.remove(os.path.join(dang, "good.nii.gz"))
    os.makedirs(os.path.join(dang, "good.nii.gz"))
    r = run("pack", "--input", dang, "--out", os.path.join(tmp, "dang.h5"))
    check(r.returncode != 0 and "good.nii.gz is not a regular file (a folder)" in r.stderr,
          f"a label path that is a folder refused: {r.stderr.strip()[-120:]}")
    r = run("pack", "--input", ph, "--out", os.path.join(tmp, "count.h5"))
    check(r.returncode == 0 and "with a label" in r.stdout,
          f"pack says how many cases have a label: {r.stdout.strip().splitlines()[0][:120]}")
    lst = os.path.join(tmp, "list.txt")
    spaced = os.path.join(tmp, "scan-#3 dir")   # spaces and a '#' in a path: tab-separated
    os.makedirs(spaced)
    shutil.copy(f"{ph}/imagesTr/case0002_0000.nii.gz", f"{spaced}/case0003_0000.nii.gz")
    shutil.copy(f"{ph}/labelsTr/case0002.nii.gz", f"{spaced}/case 3 label.nii.gz")
    hashed = os.path.join(tmp, "scan #4 dir")   # ' #' inside a path: a tab-separated line only
    os.makedirs(hashed)
    shutil.copy(f"{ph}/imagesTr/case0001_0000.nii.gz", f"{hashed}/case0004_0000.nii.gz")
    with open(lst, "w") as f:
        f.write("# image label\n")
        # a stray trailing tab (spreadsheet export) keeps the line space-separated
        f.write(f"{ph}/imagesTr/case0001_0000.nii.gz {ph}/labelsTr/case0001.nii.gz\t\n")
        f.write(f"{ph}/imagesTr/case0002_0000.nii.gz   # no label\r\n")
        # an empty tab-separated field, and a comment after spaces on a tab-separated line
        f.write("scan-#3 dir/case0003_0000.nii.gz\t \tscan-#3 dir/case 3 label.nii.gz"
                "  # relative\n")
        # ' #' inside a tab-separated path is no comment; after the NIfTI name it is
        f.write("scan #4 dir/case0004_0000.nii.gz\t  # unlabelled, tab-separated\n")
    r = run("pack", "--list", lst, "--out", os.path.join(tmp, "list.h5"))
    ok = r.returncode == 0
    if ok:
        with h5py.File(os.path.join(tmp, "list.h5"), "r") as f, h5py.File(out1, "r") as g:
            # case0003 is a copy of case0002
            ok = list(f["index/has_label"][()]) == [1, 0, 1, 0] and all(
                np.array_equal(f[f"cases/{c}/{v}"][()], g[f"cases/{d}/{v}"][()])
                for c, d, v in (("case0001", "case0001", "image"),
                                ("case0003", "case0002", "image"),
                                ("case0003", "case0002", "label"),
                                ("case0004", "case0001", "image")))
    check(ok, "--list file: labelled and unlabelled cases, tab-separated paths with spaces, same "
          f"voxels as the folder pack ({r.stderr.strip()[-160:]})")
    # a list file from a Windows editor: a byte-order mark before the first path
    with open(lst, "wb") as f:
        f.write(b"\xef\xbb\xbf" + f"{ph}/imagesTr/case0001_0000.nii.gz\n".encode())
    r = run("pack", "--list", lst, "--out", os.path.join(tmp, "bom.h5"))
    check(r.returncode == 0,
          f"--list file with a UTF-8 byte-order mark ({r.stderr.strip()[-120:]})")
    with open(lst, "w") as f:
        f.write(f"{spaced}/case0003_0000.nii.gz {spaced}/case 3 label.nii.gz\n")
    r = run("pack", "--list", lst, "--out", os.path.join(tmp, "list2.h5"))
    check(r.returncode != 0 and "separate image and label with a tab" in r.stderr,
          f"--list: spaces without a tab refused, naming the tab: {r.stderr.strip()[-120:]}")
    # a case name longer than a data set stores: refused naming the file (it was cut to 127
    # characters and lost its label); an --out too long for its .tmp name: refused, the
    # existing file kept (a cut .tmp name was --out itself, truncated by the create)
    longdir = os.path.join(tmp, "long")
    os.makedirs(os.path.join(longdir, "imagesTr"))
    os.makedirs(os.path.join(longdir, "labelsTr"))
    stem = "c" * 130
    shutil.copy(f"{ph}/imagesTr/case0001_0000.nii.gz", f"{longdir}/imagesTr/{stem}_0000.nii.gz")
    shutil.copy(f"{ph}/labelsTr/case0001.nii.gz", f"{longdir}/labelsTr/{stem}.nii.gz")
    r = run("pack", "--input", longdir, "--out", os.path.join(tmp, "longname.h5"))
    check(r.returncode != 0 and f"{stem}_0000.nii.gz" in r.stderr and "130 characters" in r.stderr
          and not os.path.exists(os.path.join(tmp, "longname.h5")),
          f"a 130-character case name refused naming the file: {r.stderr.strip()[-140:]}")
    deep = tmp
    while len(deep) < 1040:
        deep = os.path.join(deep, "d" * 200)
    os.makedirs(deep, exist_ok=True)
    longout = os.path.join(deep, "x.h5")
    shutil.copy(out1, longout)
    before = h5_content(longout)
    r = run("pack", "--input", ph, "--out", longout, "--force")
    check(r.returncode != 0 and "use a shorter path" in r.stderr and
          same_content(before, h5_content(longout)),
          f"an --out of {len(longout)} characters refused, the file kept: "
          f"{r.stderr.strip()[-100:]}")
    temporary_files(tmp, ph)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
