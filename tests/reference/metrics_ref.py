"""Independent reference of the FLARE 2022 DSC / NSD (DeepMind surface-distance algorithm) in
numpy + scipy, used to check `alice eval` (tests/reference/test_metrics_ref.py) and as the
baseline of tests/bench/bench_eval.py.

The surface-element areas are rebuilt here from the marching-cubes construction (independent of
the C code in src/eval/surface_area.c, same rules): iso-vertices at the midpoints of cut cube
edges, ambiguous faces cut off each inside corner, codes with more than four voxels on use their
complement, non-planar polygons take the triangulation of largest area (ties: fewest distinct
planes). Distances come from scipy.ndimage.distance_transform_edt(sampling=spacing).
"""
import itertools

import numpy as np
from scipy import ndimage

# DeepMind's correlate kernel: voxel (a, b, c) of the 2x2x2 neighbourhood has bit 1 << (7 - (4a+2b+c))
KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])

FLARE = [(1, "liver", 5), (2, "right_kidney", 3), (3, "spleen", 3), (4, "pancreas", 5), (5, "aorta", 2),
         (6, "ivc", 2), (7, "right_adrenal", 2), (8, "left_adrenal", 2), (9, "gallbladder", 2),
         (10, "esophagus", 3), (11, "stomach", 5), (12, "duodenum", 7), (13, "left_kidney", 3)]
BTCV = [(1, "spleen", 3), (2, "right_kidney", 3), (3, "left_kidney", 3), (4, "gallbladder", 2),
        (5, "esophagus", 3), (6, "liver", 5), (7, "stomach", 5), (8, "aorta", 2), (9, "ivc", 2),
        (10, "portal_splenic_vein", 3), (11, "pancreas", 5), (12, "right_adrenal", 2), (13, "left_adrenal", 2)]
LABEL_SETS = {"flare": FLARE, "btcv": BTCV}

_CORNERS = list(itertools.product((0, 1), repeat=3))


def _inside(code, corner):
    a, b, c = corner
    return bool(code & int(KERNEL[a, b, c]))


def _faces():
    faces = []
    for axis in range(3):
        others = [k for k in range(3) if k != axis]
        for side in (0, 1):
            ring = []
            for p, q in ((0, 0), (1, 0), (1, 1), (0, 1)):
                c = [0, 0, 0]
                c[axis], c[others[0]], c[others[1]] = side, p, q
                ring.append(tuple(c))
            faces.append(ring)
    return faces


def _polygons(code):
    mid = lambda p, q: tuple(sorted((p, q)))   # an iso-vertex is named by its cube edge
    links = {}
    for ring in _faces():
        inside = [_inside(code, c) for c in ring]
        cut = [mid(ring[i], ring[(i + 1) % 4]) for i in range(4) if inside[i] != inside[(i + 1) % 4]]
        if len(cut) == 2:
            pairs = [cut]
        elif len(cut) == 4:
            pairs = [(mid(ring[i], ring[(i + 1) % 4]), mid(ring[i], ring[(i - 1) % 4])) for i in range(4) if inside[i]]
        else:
            pairs = []
        for u, v in pairs:
            links.setdefault(u, []).append(v)
            links.setdefault(v, []).append(u)
    polys, seen = [], set()
    for start in sorted(links):
        if start in seen:
            continue
        poly, prev, cur = [], None, start
        while cur not in seen:
            seen.add(cur)
            poly.append(np.mean(np.array(cur, float), axis=0))
            nxt = [v for v in links[cur] if v != prev]
            prev, cur = cur, (nxt[0] if nxt else links[cur][0])
        polys.append(poly)
    return polys


def _triangulations(idx):
    if len(idx) < 3:
        yield []
        return
    for k in range(1, len(idx) - 1):
        for left in _triangulations(idx[:k + 1]):
            for right in _triangulations(idx[k:]):
                yield left + right + [(idx[0], idx[k], idx[-1])]


def _best_normals(poly):
    best = None
    for tris in _triangulations(list(range(len(poly)))):
        normals = [np.cross(poly[b] - poly[a], poly[c] - poly[a]) / 2 for a, b, c in tris]
        area = sum(np.linalg.norm(n) for n in normals)
        units = []
        for n in normals:
            u = n / np.linalg.norm(n)
            if not any(abs(abs(u @ w) - 1) < 1e-9 for w in units):
                units.append(u)
        key = (round(area, 9), -len(units))
        if best is None or key > best[0]:
            best = (key, normals)
    return best[1]


_NORMALS = None


def code_normals():
    """Triangle area vectors of every neighbour code (list of arrays [k, 3])."""
    global _NORMALS
    if _NORMALS is None:
        table = []
        for code in range(256):
            canonical = code if bin(code).count("1") <= 4 else 255 - code
            normals = [n for poly in _polygons(canonical) for n in _best_normals(poly)]
            table.append(np.array(normals).reshape(-1, 3))
        _NORMALS = table
    return _NORMALS


def area_table(spacing):
    s = np.array([spacing[1] * spacing[2], spacing[0] * spacing[2], spacing[0] * spacing[1]], float)
    return np.array([np.linalg.norm(n * s, axis=1).sum() if len(n) else 0.0 for n in code_normals()])


def surface_distances(gt, pred, spacing):
    """DeepMind compute_surface_distances: surfel distances and areas of both masks."""
    area = area_table(spacing)
    union = gt | pred
    nz = np.nonzero(union)
    lo = np.array([a.min() for a in nz])
    hi = np.array([a.max() for a in nz])
    shape = hi - lo + 2
    out = {}
    codes = {}
    for key, m in (("gt", gt), ("pred", pred)):
        crop = np.zeros(shape, np.uint8)
        crop[:-1, :-1, :-1] = m[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
        codes[key] = ndimage.correlate(crop.astype(np.int32), KERNEL, mode="constant", cval=0)
    border = {k: (c != 0) & (c != 255) for k, c in codes.items()}
    dist = {}
    for k in ("gt", "pred"):
        dist[k] = (ndimage.distance_transform_edt(~border[k], sampling=spacing) if border[k].any()
                   else np.full(border[k].shape, np.inf))
    out["gt_to_pred"] = dist["pred"][border["gt"]]
    out["pred_to_gt"] = dist["gt"][border["pred"]]
    out["area_gt"] = area[codes["gt"][border["gt"]]]
    out["area_pred"] = area[codes["pred"][border["pred"]]]
    return out


def organ_scores(gt_labels, pred_labels, spacing, label, tolerance):
    gt = gt_labels == label
    pred = pred_labels == label
    ng, npred = int(gt.sum()), int(pred.sum())
    if ng == 0 and npred == 0:
        return 1.0, 1.0
    if ng == 0 or npred == 0:
        return 0.0, 0.0
    dsc = 2.0 * float((gt & pred).sum()) / (ng + npred)
    sd = surface_distances(gt, pred, spacing)
    near = sd["area_gt"][sd["gt_to_pred"] <= tolerance].sum() + sd["area_pred"][sd["pred_to_gt"] <= tolerance].sum()
    return dsc, float(near / (sd["area_gt"].sum() + sd["area_pred"].sum()))


# The organs the FLARE 2022 evaluation script scores on the truth's labelled axial slices only.
LABELLED_SLICES = ("aorta", "ivc", "esophagus")


def case_scores(gt_labels, pred_labels, spacing, label_set="flare", protocol="plain"):
    """protocol "flare22": as the FLARE 2022 script, an organ of LABELLED_SLICES present in the
    truth is scored on the arrays cropped to gt[:, :, z_lower:z_upper] (first and last labelled
    slice of the truth; numpy's slice leaves the last one out); the empty-mask conventions are
    taken on the whole volume before the crop."""
    out = []
    for lid, name, tol in LABEL_SETS[label_set]:
        gt, pred = gt_labels, pred_labels
        if protocol == "flare22" and name in LABELLED_SLICES and (gt_labels == lid).any():
            z = np.where(gt_labels == lid)[2]
            gt, pred = gt_labels[:, :, z.min():z.max()], pred_labels[:, :, z.min():z.max()]
            if not (gt == lid).any():
                # a one-slice truth: nothing left; the script's Dice is 0/0 (compute_dice_
                # coefficient returns NaN) and so is its surface Dice on empty masks
                out.append((name, float("nan"), float("nan")))
                continue
        out.append((name,) + organ_scores(gt, pred, spacing, lid, tol))
    return out
