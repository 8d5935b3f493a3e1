"""A damaged or foreign dataset.h5 is refused with a message naming the file and the problem
(io/dataset_read.c), never a crash (a signal) or a read past a buffer; each case is a copy of
a good `alice pack` output changed with h5py:
  - num_cases lower than the index's length (read the index into a buffer sized by num_cases:
    a heap overflow);
  - a case attribute with more values than expected (spacing of 64 values into 3 doubles);
  - a label whose shape differs from its image (failed mid-training in an HDF5 read);
  - the file cut in half (a copy interrupted): named as damaged, not an HDF5 error stack;
  - a format attribute that is a number, not a string: named as not an alice data set;
  - string attributes written by h5py, as fixed-length null-padded np.bytes_ (the format
    attribute lost its last character and the file was refused as foreign) or as a Python str
    (variable-length UTF-8: HDF5 refused to convert it to ASCII), read whole;
  - a string attribute holding several strings (format, source_image; fixed-length and
    variable-length: HDF5 wrote them all into one string's buffer, a heap or stack overflow);
  - a case without its image, and an index of variable-length names (h5py's list of str):
    named, not an HDF5 call's source line;
  - geometry and bookkeeping values pack never writes (an empty original_shape, NaN or
    singular affines, ras_axis not an order of the axes, a fold past num_folds, zero spacing,
    a crop_box not spanning the image, has_label = 1 without a label, an empty image);
  - deflate chunks of the voxel data overwritten (a corrupt copy): a training run's read names
    the file, the case and the fix."""
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError as e:  # pragma: no cover
    print(f"skip: {e}")
    sys.exit(77)

ALICE = os.environ.get("ALICE", "bin/alice")


def eval_on(ds, pred):
    """alice eval opens the data set first (the predictions folder is empty)."""
    return subprocess.run([ALICE, "eval", "--pred", pred, "--data", ds, "--out", ds + ".res"],
                          capture_output=True, text=True)


def main():
    if not os.access(ALICE, os.X_OK):
        print(f"skip: {ALICE} is not built")
        return 77
    failures = []
    with tempfile.TemporaryDirectory(prefix="alice_damaged_") as tmp:
        ph, good, pred = (os.path.join(tmp, n) for n in ("ph", "good.h5", "pred"))
        os.makedirs(pred)
        for cmd in ([ALICE, "phantom", "--out", ph, "--cases", "2", "--size", "small"],
                    [ALICE, "pack", "--input", ph, "--out", good, "spacing=4,4,4"]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-2000:])
                return 1
        base = eval_on(good, pred)
        if "no prediction" not in base.stderr:
            print(base.stderr[-1000:])
            failures.append("the good data set did not reach the predictions step")

        def damaged(name, change, want):
            path = os.path.join(tmp, name + ".h5")
            shutil.copy(good, path)
            change(path)
            r = eval_on(path, pred)
            ok = 0 < r.returncode < 128 and path in r.stderr and want in r.stderr \
                and "HDF5 call failed" not in r.stderr
            last = r.stderr.strip().splitlines()[-1][:160] if r.stderr.strip() else r.returncode
            print(("ok   " if ok else "FAIL ") + f"{name}: {last}")
            if not ok:
                failures.append(name)

        def fewer_cases(p):
            with h5py.File(p, "a") as f:
                f.attrs["num_cases"] = np.int32(1)

        def long_spacing(p):
            with h5py.File(p, "a") as f:
                g = f["cases"][list(f["cases"].keys())[0]]
                del g.attrs["spacing"]
                g.attrs["spacing"] = np.ones(64)

        def label_shape(p):
            with h5py.File(p, "a") as f:
                g = f["cases"][list(f["cases"].keys())[0]]
                shape = g["label"].shape
                del g["label"]
                g["label"] = np.zeros((shape[0] - 1, shape[1], shape[2]), np.uint8)

        def truncated(p):
            data = open(p, "rb").read()
            open(p, "wb").write(data[: len(data) // 2])

        damaged("fewer_cases", fewer_cases, "but the index lists 2 names")
        damaged("long_spacing", long_spacing, "holds 64 values, expected 3")
        damaged("label_shape", label_shape, "the label's shape differs from the image's")
        damaged("truncated", truncated, "not a complete HDF5 file")

        def numeric_format(p):
            with h5py.File(p, "a") as f:
                del f.attrs["format"]
                f.attrs["format"] = np.int32(7)

        # a number where the format string belongs: foreign, not an HDF5 type-conversion error
        damaged("numeric_format", numeric_format, "not an alice data set")

        def string_array(attr, value):
            def change(p):
                with h5py.File(p, "a") as f:
                    obj = f if attr == "format" else f["cases"][list(f["cases"].keys())[0]]
                    del obj.attrs[attr]
                    obj.attrs[attr] = value
            return change

        damaged("format_fixed_array", string_array("format", np.array([b"alice-dataset"] * 2)),
                "not an alice data set")
        damaged("format_vlen_array", string_array("format", ["a", "b", "c", "d"]),
                "not an alice data set")
        damaged("source_image_array", string_array("source_image", np.array([b"x" * 300] * 4)),
                "holds no single string")

        def no_image(p):
            with h5py.File(p, "a") as f:
                del f["cases"][list(f["cases"].keys())[0]]["image"]

        def vlen_index(p):
            with h5py.File(p, "a") as f:
                names = [n.decode() for n in f["index/name"][:]]
                del f["index/name"]
                f["index/name"] = names   # h5py: variable-length UTF-8 strings

        damaged("no_image", no_image, "has no image dataset")
        damaged("vlen_index", vlen_index, "does not hold fixed-length strings")

        def case_attr(attr, value):
            def change(p):
                with h5py.File(p, "a") as f:
                    g = f["cases"][list(f["cases"].keys())[0]]
                    g.attrs[attr] = np.asarray(value, dtype=g.attrs[attr].dtype)
            return change

        def root_attr(attr, value):
            def change(p):
                with h5py.File(p, "a") as f:
                    f.attrs[attr] = np.asarray(value, dtype=f.attrs[attr].dtype)
            return change

        def no_label(p):
            with h5py.File(p, "a") as f:
                del f["cases"][list(f["cases"].keys())[0]]["label"]

        def empty_image(p):
            with h5py.File(p, "a") as f:
                g = f["cases"][list(f["cases"].keys())[0]]
                for member in ("image", "label"):
                    dtype = g[member].dtype
                    del g[member]
                    g[member] = np.zeros((0, 4, 4), dtype)

        # values as alice pack never writes them (a damaged or hand-edited file): named when
        # the file is opened, not written into a prediction (an empty grid or a NaN affine
        # under its final name), asked of the allocator (exabytes) or used as an index
        eye = np.eye(4)
        for name, change, want in (
                ("orig_shape_zero", case_attr("original_shape", [0, 0, 0]),
                 "original_shape is outside 1..65535"),
                ("orig_shape_negative", case_attr("original_shape", [-5, 128, 78]),
                 "original_shape is outside 1..65535"),
                ("orig_shape_huge", case_attr("original_shape", [60000, 60000, 60000]),
                 "holds more than 2^32 voxels"),
                ("orig_affine_nan", case_attr("original_affine", eye * np.nan),
                 "holds a non-finite value or is singular"),
                ("affine_singular", case_attr("affine", np.zeros((4, 4))),
                 "holds a non-finite value or is singular"),
                ("ras_axis_repeat", case_attr("ras_axis", [0, 0, 7]),
                 "ras_axis is not an order of the axes"),
                ("ras_flip_two", case_attr("ras_flip", [0, 2, 0]), "ras_flip holds a value"),
                ("fold_beyond", case_attr("fold", 77), "fold = 77 is outside"),
                ("spacing_zero", case_attr("spacing", [1.0, 0.0, 1.0]),
                 "spacing is not a positive number"),
                ("crop_box_off", case_attr("crop_box", [[0, 0, 0], [1, 1, 1]]),
                 "crop_box does not span the image"),
                ("num_folds_zero", root_attr("num_folds", 0), "num_folds = 0"),
                ("root_spacing_negative", root_attr("spacing", [4.0, -4.0, 4.0]),
                 "the root attribute spacing holds -4"),
                ("label_missing", no_label, "has_label = 1 but the case has no label dataset"),
                ("image_empty", empty_image, "the image is empty along an axis")):
            damaged(name, change, want)

        # the voxel data damaged, the metadata intact: dataset_open accepts the file and the
        # first read of a volume (a training run's loader) fails; named, not an HDF5 call
        corrupt = os.path.join(tmp, "corrupt.h5")
        shutil.copy(good, corrupt)
        with h5py.File(corrupt, "r") as f:
            spans = []
            for name in f["cases"]:
                d = f["cases"][name]["image"]
                for k in range(d.id.get_num_chunks()):
                    info = d.id.get_chunk_info(k)
                    spans.append((info.byte_offset, info.size))
        with open(corrupt, "r+b") as fh:
            for offset, size in spans:
                fh.seek(offset + size // 4)
                fh.write(bytes(range(251)) * (size // 2 // 251 + 1))
        micro = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train", "micro.cfg")
        r = subprocess.run([ALICE, "pretrain", "--config", micro, "data=" + corrupt,
                            "run_dir=" + os.path.join(tmp, "run"), "steps=1"],
                           capture_output=True, text=True)
        ok = 0 < r.returncode < 128 and corrupt in r.stderr and \
            "voxels cannot be read" in r.stderr and "HDF5 call failed" not in r.stderr
        print(("ok   " if ok else "FAIL ") + f"corrupt voxel chunks ({len(spans)}): "
              f"{r.stderr.strip().splitlines()[-1][:160] if r.stderr.strip() else r.returncode}")
        if not ok:
            print(r.stderr[-1500:])
            failures.append("corrupt chunks")

        for kind, as_written in (("fixed-length null-padded", np.bytes_),
                                 ("UTF-8 variable-length", str)):
            edited = os.path.join(tmp, "edited.h5")
            shutil.copy(good, edited)
            with h5py.File(edited, "a") as f:
                fmt = f.attrs["format"]
                fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
                f.attrs["format"] = as_written(fmt)   # as h5py writes np.bytes_ / a Python str
            r = eval_on(edited, pred)
            ok = "no prediction" in r.stderr and "not an alice data set" not in r.stderr
            print(("ok   " if ok else "FAIL ") + f"{kind} format attribute (h5py) read whole")
            if not ok:
                print(r.stderr[-500:])
                failures.append(kind)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
