"""io/nifti_io and io/geometry against nibabel and scipy (independent references).

Reads every datatype and orientation nibabel can write (LPS, RAS, permuted axes, sform vs
qform vs pixdim only, scl_slope/scl_inter), rejects unsupported and truncated files and a
.nii.gz whose CRC-32 fails, reads X.nii.gz's own voxels beside a stale X.nii, writes
int16/uint8 files nibabel reads back, reorients like nibabel's as_closest_canonical (also
strongly oblique and sheared affines) and resamples like scipy.ndimage.map_coordinates (order 1
and 0)."""
import gzip
import os
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np
from scipy import ndimage

BUILD = os.environ.get("BUILD", "build")
TOOL = os.path.join(BUILD, "tools", "nifti_tool")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def save_bin(path, data, affine):
    with open(path, "wb") as f:
        f.write(np.asarray(data.shape, np.int32).tobytes())
        f.write(np.asarray(affine, np.float64).tobytes())
        f.write(np.ascontiguousarray(data, np.float32).tobytes())


def load_bin(path):
    raw = open(path, "rb").read()
    dim = np.frombuffer(raw[:12], np.int32)
    aff = np.frombuffer(raw[12:140], np.float64).reshape(4, 4)
    data = np.frombuffer(raw[140:], np.float32).reshape(dim)
    return data, aff


def tool(*args):
    return subprocess.run([TOOL, *args], capture_output=True, text=True)


def read_with_tool(path, tmp):
    out = os.path.join(tmp, "read.bin")
    r = tool("read", path, out)
    if r.returncode != 0:
        return None, None, r.stderr
    d, a = load_bin(out)
    return d, a, ""


def main():
    if not os.path.exists(TOOL):
        print(f"FAIL: {TOOL} missing (make tests-build)")
        return 1
    with tempfile.TemporaryDirectory(prefix="alice_nifti_") as tmp:
        return run_checks(tmp)


def run_checks(tmp):
    rng = np.random.default_rng(7)
    shape = (7, 5, 4)
    lps = np.diag([-1.5, -1.5, 2.5, 1.0])
    lps[:3, 3] = [100.0, 80.0, -40.0]

    # 1. every datatype, with and without scaling
    dtypes = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float32,
              np.float64]
    for dt in dtypes:
        info = np.iinfo(dt) if np.issubdtype(dt, np.integer) else None
        lo, hi = (max(info.min, -2000), min(info.max, 3000)) if info else (-1000.0, 1000.0)
        data = rng.uniform(lo, hi, shape).astype(dt)
        img = nib.Nifti1Image(data, lps, dtype=dt)
        if dt == np.int16:
            img.header.set_slope_inter(0.5, -10.0)
        p = os.path.join(tmp, f"t_{np.dtype(dt).name}.nii.gz")
        nib.save(img, p)
        ref = nib.load(p)
        got, aff, err = read_with_tool(p, tmp)
        check(got is not None, f"read {np.dtype(dt).name} {err}")
        if got is None:
            continue
        check(np.allclose(got, ref.get_fdata(), rtol=1e-6, atol=1e-3),
              f"{np.dtype(dt).name}: voxels equal nibabel's get_fdata (scaled: {dt == np.int16})")
        check(np.allclose(aff, ref.affine, atol=1e-5), f"{np.dtype(dt).name}: affine")

    # 2. orientations and which transform wins
    base = rng.integers(-1000, 1000, shape).astype(np.int16)
    perm = np.array([[0, 0, 2.0, 10], [-1.2, 0, 0, 20], [0, 3.0, 0, -5], [0, 0, 0, 1]])
    ras = np.diag([0.8, 0.9, 3.0, 1.0])
    for name, aff in [("LPS", lps), ("RAS", ras), ("permuted", perm)]:
        p = os.path.join(tmp, f"o_{name}.nii")
        nib.save(nib.Nifti1Image(base, aff), p)
        got, a, err = read_with_tool(p, tmp)
        check(got is not None and np.array_equal(got, base) and np.allclose(a, aff, atol=1e-5),
              f"orientation {name}: voxels and affine {err}")
    # qform only (sform code 0) and sform preferred over a different qform
    img = nib.Nifti1Image(base, None)
    img.set_qform(perm, code=1)
    img.set_sform(np.eye(4), code=0)
    p = os.path.join(tmp, "qform_only.nii.gz")
    nib.save(img, p)
    _, a, _ = read_with_tool(p, tmp)
    check(a is not None and np.allclose(a, perm, atol=1e-4), "qform used when sform_code = 0")
    img = nib.Nifti1Image(base, None)
    img.set_qform(ras, code=1)
    img.set_sform(lps, code=2)
    p = os.path.join(tmp, "sform_wins.nii.gz")
    nib.save(img, p)
    _, a, _ = read_with_tool(p, tmp)
    check(a is not None and np.allclose(a, lps, atol=1e-5), "sform preferred when sform_code > 0")
    img = nib.Nifti1Image(base, None)
    img.header.set_zooms((1.25, 2.0, 4.0))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    p = os.path.join(tmp, "pixdim_only.nii.gz")
    nib.save(img, p)
    _, a, _ = read_with_tool(p, tmp)
    check(a is not None and np.allclose(a, np.diag([1.25, 2.0, 4.0, 1.0])),
          "pixdim alone when neither transform is set")
    # negative pixdim (some converters write them): |pixdim| as nibabel reads them, for the
    # qform and for pixdim alone (niftilib made them 1 mm)
    for name, qcode in (("qform_negpix", 1), ("pixdim_negpix", 0)):
        img = nib.Nifti1Image(base, None)
        img.set_qform(perm if qcode else None, code=qcode)
        img.set_sform(None, code=0)
        p = os.path.join(tmp, name + ".nii")
        nib.save(img, p)
        raw = bytearray(open(p, "rb").read())
        want = nib.load(p).header.get_qform() if qcode else np.diag([1.0, 1.0, 1.0, 1.0])
        zooms = np.frombuffer(bytes(raw[76:108]), "<f4").copy()   # pixdim[0..7]
        if not qcode:
            zooms[1:4] = [0.8, 0.8, 2.5]
            want = np.diag([0.8, 0.8, 2.5, 1.0])
        zooms[1:4] = -np.abs(zooms[1:4])
        raw[76:108] = zooms.astype("<f4").tobytes()
        open(p, "wb").write(bytes(raw))
        _, a, err = read_with_tool(p, tmp)
        check(a is not None and np.allclose(a, want, atol=1e-4),
              f"{name}: |pixdim| used: {a if a is None else np.round(a, 3).tolist()} {err}")

    # 3. bad input: unsupported datatype, truncated gzip, not NIfTI at all
    p = os.path.join(tmp, "complex.nii.gz")
    nib.save(nib.Nifti1Image(base.astype(np.complex64), lps), p)
    got, _, err = read_with_tool(p, tmp)
    check(got is None and "unsupported" in err and "complex.nii.gz" in err,
          f"complex64 rejected naming the file: {err.strip()}")
    big = rng.integers(-1000, 1000, (40, 40, 30)).astype(np.int16)
    p = os.path.join(tmp, "full.nii.gz")
    nib.save(nib.Nifti1Image(big, lps), p)
    raw = open(p, "rb").read()
    pt = os.path.join(tmp, "truncated.nii.gz")
    open(pt, "wb").write(raw[: len(raw) // 2])
    got, _, err = read_with_tool(pt, tmp)
    check(got is None and "truncated.nii.gz" in err, f"truncated .nii.gz rejected: {err.strip()}")
    pc = os.path.join(tmp, "garbage.nii.gz")
    open(pc, "wb").write(gzip.compress(b"this is not a nifti file" * 20))
    got, _, err = read_with_tool(pc, tmp)
    check(got is None and "garbage.nii.gz" in err, f"corrupt .nii.gz rejected: {err.strip()}")
    # a gzip stream whose CRC-32 trailer does not match its data (the voxels themselves decode:
    # niftilib never reads the trailer, so a flipped bit in the data went unnoticed); then the
    # same where the voxels end before the stream does (bytes after the data, which a reader
    # stopping after the voxels never decompresses, 1 MiB: beyond zlib's read-ahead, which
    # would reach the trailer by itself): only reading to the end checks it
    plain = os.path.join(tmp, "tail.nii")
    nib.save(nib.Nifti1Image(big, lps), plain)
    tail = bytearray(gzip.compress(open(plain, "rb").read() + bytes(1 << 20)))
    for name, stream in (("badcrc", bytearray(raw)), ("badcrc_tail", tail)):
        stream[-8] ^= 0xFF
        p = os.path.join(tmp, f"{name}.nii.gz")
        open(p, "wb").write(bytes(stream))
        got, _, err = read_with_tool(p, tmp)
        check(got is None and f"{name}.nii.gz" in err and "corrupt" in err,
              f"{name}: a .nii.gz with a wrong CRC-32 rejected: {err.strip()}")
    ptail = os.path.join(tmp, "badcrc_tail.nii.gz")
    tail[-8] ^= 0xFF   # intact again: trailing bytes after the voxels are allowed
    open(ptail, "wb").write(bytes(tail))
    got, _, err = read_with_tool(ptail, tmp)
    check(got is not None and np.array_equal(got, big), f"intact .nii.gz with trailing bytes {err}")
    # a header asking for more memory than any node has (24 TiB; a damaged header, or a
    # scan too large for the node): this file's error, naming it, not an allocation failure
    # that ended the job naming no file (pack --keep-going could not skip it)
    hdr = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), lps).header
    hdr.set_data_shape((32767, 32767, 4096))   # int16 voxels and their float copy
    phuge = os.path.join(tmp, "huge.nii.gz")
    open(phuge, "wb").write(gzip.compress(hdr.binaryblock + bytes(4 + 128)))
    got, _, err = read_with_tool(phuge, tmp)
    need = 32767 * 32767 * 4096 * (2 + 4) / 2 ** 30
    check(got is None and f"huge.nii.gz: reading its 32767 x 32767 x 4096 voxels takes "
          f"{need:.2f} GiB" in err, f"a header beyond the host's memory refused naming the file: {err.strip()}")
    # a big-endian file (swapped to this machine's order), and an .hdr/.img pair and an ANALYZE
    # pair (the voxels in the .img, not in the file named): as nibabel reads them
    be_img = nib.Nifti1Image(big, lps, nib.Nifti1Header(endianness=">"))
    be_img.set_data_dtype(np.dtype(">i2"))
    pbe = os.path.join(tmp, "bigendian.nii.gz")
    nib.save(be_img, pbe)
    check(nib.load(pbe).header.endianness == ">" and nib.load(pbe).get_data_dtype() == ">i2",
          "the big-endian test file is big-endian int16")
    got, _, err = read_with_tool(pbe, tmp)
    check(got is not None and np.array_equal(got, big), f"big-endian int16 voxels {err}")
    for kind, cls in (("pair", nib.Nifti1Pair), ("analyze", nib.AnalyzeImage)):
        ppair = os.path.join(tmp, f"{kind}.hdr")
        nib.save(cls(big.astype(np.float32), lps), ppair)
        got, _, err = read_with_tool(ppair, tmp)
        check(got is not None and np.array_equal(got, big), f"{kind}: voxels of the .img {err}")
    # X.nii.gz beside a stale X.nii: the voxels come from the file named (niftilib looked
    # for X.nii first and took its voxels under X.nii.gz's header)
    sib = os.path.join(tmp, "sibling")
    os.makedirs(sib)
    nib.save(nib.Nifti1Image(np.full((6, 5, 4), 7, np.int16), lps), os.path.join(sib, "x.nii.gz"))
    nib.save(nib.Nifti1Image(np.full((6, 5, 4), -3, np.int16), lps), os.path.join(sib, "x.nii"))
    got, _, err = read_with_tool(os.path.join(sib, "x.nii.gz"), tmp)
    check(got is not None and np.all(got == 7), "x.nii.gz read beside a stale x.nii: its own "
          f"voxels ({None if got is None else np.unique(got).tolist()}) {err}")
    got, _, err = read_with_tool(os.path.join(sib, "x.nii"), tmp)
    check(got is not None and np.all(got == -3), "x.nii beside x.nii.gz: its own voxels "
          f"({None if got is None else np.unique(got).tolist()}) {err}")

    # 4. writing: nibabel reads back what we write
    for dtype, npt in [("int16", np.int16), ("uint8", np.uint8), ("float32", np.float32)]:
        vals = base if dtype != "uint8" else (np.abs(base) % 14)
        bp = os.path.join(tmp, "w.bin")
        save_bin(bp, vals.astype(np.float32), perm)
        out = os.path.join(tmp, f"written_{dtype}.nii.gz")
        r = tool("write", bp, out, dtype)
        check(r.returncode == 0, f"write {dtype} {r.stderr}")
        back = nib.load(out)
        check(back.get_data_dtype() == npt, f"written {dtype}: dtype {back.get_data_dtype()}")
        check(np.array_equal(np.asarray(back.dataobj), vals.astype(npt)), f"written {dtype}: voxels")
        check(np.allclose(back.affine, perm, atol=1e-5), f"written {dtype}: sform affine")
        check(np.allclose(back.get_qform(), perm, atol=1e-4), f"written {dtype}: qform affine")
    leftovers = [f for f in os.listdir(tmp) if ".tmp" in f]
    check(not leftovers, f"no temporary files left behind ({leftovers})")

    # 5. reorientation to RAS equals nibabel's as_closest_canonical
    for name, aff in [("LPS", lps), ("permuted", perm)]:
        img = nib.as_closest_canonical(nib.Nifti1Image(base.astype(np.float32), aff))
        bp = os.path.join(tmp, "r.bin")
        save_bin(bp, base.astype(np.float32), aff)
        r = tool("reorient", bp, os.path.join(tmp, "r_out.bin"))
        d, a = load_bin(os.path.join(tmp, "r_out.bin"))
        check(r.returncode == 0 and np.array_equal(d, img.get_fdata()) and np.allclose(a, img.affine),
              f"reorient {name} equals as_closest_canonical")

    # 5b. strongly oblique and sheared affines (nibabel goes through the voxel axes in order
    # on the nearest rotation; the largest entry overall picked other axes for 25 of 300
    # random rotations): every one as as_closest_canonical
    def rotation(angles):
        out = np.eye(3)
        for axis, t in enumerate(angles):
            c, s_ = np.cos(t), np.sin(t)
            i, j = [k for k in range(3) if k != axis]
            m = np.eye(3)
            m[i, i], m[i, j], m[j, i], m[j, j] = c, -s_, s_, c
            out = out @ m
        return out
    small = rng.normal(0, 1, (5, 4, 3)).astype(np.float32)
    rot_rng = np.random.default_rng(11)
    cases = [rotation(np.radians([45, 37, 0]))]
    cases += [rotation(rot_rng.uniform(-np.pi, np.pi, 3)) for _ in range(120)]
    cases += [rotation(rot_rng.uniform(-np.pi, np.pi, 3)) @ (np.eye(3) + np.triu(
        rot_rng.uniform(-0.3, 0.3, (3, 3)), 1)) for _ in range(40)]
    differ = []
    for k, m in enumerate(cases):
        aff = np.eye(4)
        aff[:3, :3] = m * [1.5, 0.8, 2.5]
        aff[:3, 3] = rot_rng.uniform(-50, 50, 3)
        img = nib.as_closest_canonical(nib.Nifti1Image(small, aff))
        bp = os.path.join(tmp, "o.bin")
        save_bin(bp, small, aff)
        r = tool("reorient", bp, os.path.join(tmp, "o_out.bin"))
        d, a = load_bin(os.path.join(tmp, "o_out.bin"))
        if not (r.returncode == 0 and d.shape == img.shape and
                np.array_equal(d, img.get_fdata()) and np.allclose(a, img.affine)):
            differ.append(k)
    check(not differ, f"reorient of {len(cases)} oblique/sheared affines equals "
          f"as_closest_canonical (differ: {differ[:10]})")

    # 6. resampling equals scipy.ndimage.map_coordinates (order 1 and 0)
    vol = rng.normal(0, 100, (13, 11, 9)).astype(np.float32)
    step = (1.5 / 1.3, 0.7, 2.0 / 1.7)
    bp = os.path.join(tmp, "s.bin")
    save_bin(bp, vol, np.eye(4))
    for mode, order in [("linear", 1), ("nearest", 0)]:
        out = os.path.join(tmp, f"s_{mode}.bin")
        r = tool("resample", bp, out, *[repr(s) for s in step], mode)
        d, _ = load_bin(out)
        expect_dim = [max(1, int(round(n / s))) for n, s in zip(vol.shape, step)]
        check(list(d.shape) == expect_dim, f"resample {mode}: shape {d.shape} vs {expect_dim}")
        grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(d.shape, step)], indexing="ij")
        ref = ndimage.map_coordinates(vol.astype(np.float64), grid, order=order, mode="nearest")
        err = np.abs(d - ref).max()
        check(r.returncode == 0 and err < 1e-3, f"resample {mode} vs scipy order={order}: max err {err:.2e}")

    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
