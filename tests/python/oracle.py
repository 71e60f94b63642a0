"""Independent numpy float64 implementation of docs/design.md §Diff semantics.

Written from the design text, not from our C++ code: every element converted
to float64, d = |cand - ref| with the infinity/NaN rules, then each statistic
with plain numpy reductions."""
import math

import numpy as np

HIST_EDGES = [10.0 ** k for k in range(-12, 5)]  # 1e-12 ... 1e4


def histogram(d):
    h = [0] * 19
    for v in d[~np.isnan(d)]:
        if v == 0:
            h[0] += 1
        else:
            h[1 + sum(1 for e in HIST_EDGES if v >= e)] += 1
    return h


def diff_stats(ref, cand, atol=1e-8, rtol=1e-5, equal_nan=False, transposed=False):
    r = np.asarray(ref).astype(np.float64)
    c = np.asarray(cand).astype(np.float64)
    if transposed:
        c = c.T
    shape = r.shape
    r, c = r.ravel(), np.ascontiguousarray(c).ravel()
    with np.errstate(all="ignore"):
        d = np.abs(c - r)
        d[np.isinf(r) & np.isinf(c) & (r == c)] = 0.0
        if equal_nan:
            d[np.isnan(r) & np.isnan(c)] = 0.0
        nan_d = np.isnan(d)
        any_nan = bool(nan_d.any())
        inf_d = np.isinf(d)
        absr = np.abs(r)
        rel = np.where(d == 0, 0.0, np.where((absr == 0) | inf_d, np.inf, d / absr))
        finite = np.isfinite(r) & np.isfinite(c)
        dot = float(np.sum(r[finite] * c[finite]))
        rr = float(np.sum(r[finite] ** 2))
        cc = float(np.sum(c[finite] ** 2))
    n = d.size
    out = {
        "count": n,
        "nan_ref": int(np.isnan(r).sum()), "nan_cand": int(np.isnan(c).sum()),
        "inf_ref": int(np.isinf(r).sum()), "inf_cand": int(np.isinf(c).sum()),
        "mismatches": int((nan_d | inf_d | (d > atol + rtol * absr)).sum()),
        "histogram": histogram(d),
    }
    if n == 0:
        out.update(mean_abs=0.0, max_abs=0.0, min_abs=0.0, mean_rel=0.0, max_rel=0.0,
                   rmse=0.0, cosine=1.0, max_abs_index=None)
        return out
    if any_nan:
        nan = float("nan")
        out.update(mean_abs=nan, max_abs=nan, min_abs=nan, mean_rel=nan, max_rel=nan,
                   rmse=nan, cosine=nan)
    else:
        if bool(inf_d.any()):
            cosine = float("nan")
        elif rr == 0 and cc == 0:
            cosine = 1.0
        elif rr == 0 or cc == 0:
            cosine = 0.0
        else:
            cosine = dot / math.sqrt(rr * cc)
        out.update(mean_abs=float(d.mean()), max_abs=float(d.max()), min_abs=float(d.min()),
                   mean_rel=float(rel.mean()), max_rel=float(rel.max()),
                   rmse=math.sqrt(float(np.mean(d * d))), cosine=cosine)
    i = int(np.argmax(d))  # numpy: first NaN if any, else first maximum
    out["max_abs_index"] = [int(x) for x in np.unravel_index(i, shape)] if shape else []
    out["ref_at_max"] = float(r[i])
    out["cand_at_max"] = float(c[i])
    return out
