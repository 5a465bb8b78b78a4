"""Inter-annotator agreement (Cohen's kappa, Krippendorff's alpha, span/box F1) and final labels.

Everything is computed on whole columns with pandas/numpy: annotations are loaded once, values
become integer codes, and pairs of annotators come from one self-merge on the sample.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from django.db import connection

from tracker.exceptions import InvalidValue
from tracker.models import Annotation, AnnotationTask, Project
from tracker.services.labeling import CHUNK, frame, get_task, value_key

COLUMNS = [
    "scope", "name", "annotators", "items", "annotations",
    "observed_agreement", "cohen_kappa", "krippendorff_alpha",
]
METRICS = ("nominal", "ordinal", "interval")
STRATEGIES = ("accepted", "majority", "latest")
# Boxes count as the same object when their intersection over union reaches this.
BOX_IOU = 0.5


def _decode_json(texts: list[Any]) -> list[Any]:
    """JSON column text (as the database returns it) to Python values, plain strings in bulk."""
    col = pd.Series(texts, dtype=object)
    out = col.copy()
    is_text = col.map(type) == str
    plain = is_text & col.astype(str).str.fullmatch(r'"[^"\\]*"')
    out[plain] = col[plain].str.slice(1, -1)
    other = is_text & ~plain
    if other.any():
        out[other] = col[other].map(json.loads)
    return out.tolist()


def load_annotations(
    task: AnnotationTask,
    *,
    sample_ids: Sequence[int] | None = None,
    annotators: Sequence[str] | None = None,
    exclude_rejected: bool = False,
    light: bool = False,
) -> pd.DataFrame:
    """The task's annotations as columns: sample_id, annotator, value, and unless ``light``
    status, updated_at, reviewed_at and the sample's external_id.

    Read with one raw query (building 100,000 ORM rows costs more than the agreement itself),
    so the times are as the database returns them: good for ordering, not for display.
    """
    qs = Annotation.objects.filter(task=task)
    if annotators is not None:
        qs = qs.filter(annotator__username__in=list(annotators))
    if exclude_rejected:
        qs = qs.exclude(status=Annotation.Status.REJECTED)
    cols = ["sample_id", "annotator", "value"]
    fields = ["sample_id", "annotator__username", "value"]
    if not light:
        cols += ["status", "updated_at", "reviewed_at", "external_id"]
        fields += ["status", "updated_at", "reviewed_at", "sample__external_id"]
    if sample_ids is None:
        parts = [qs]
    else:
        ids = list(sample_ids)
        parts = [qs.filter(sample_id__in=ids[start : start + CHUNK]) for start in range(0, len(ids), CHUNK)]
    rows: list[tuple] = []
    with connection.cursor() as cur:
        for part in parts:
            sql, params = part.values_list(*fields).query.sql_with_params()
            cur.execute(sql, params)
            rows.extend(cur.fetchall())
    out = frame(rows, cols, raw=("value",))
    if len(out):
        out["value"] = pd.Series(_decode_json(out["value"].tolist()), dtype=object)
    return out


# --------------------------------------------------------------------------- coefficients


def _nan() -> float:
    return float("nan")


def alpha_nominal(units: np.ndarray, codes: np.ndarray) -> float:
    """Krippendorff's alpha for nominal data from parallel arrays (unit, value code).

    Uses the coincidence-matrix form without building the matrix:
    alpha = 1 - (n - 1) * (n - sum_c o_cc) / (n^2 - sum_c n_c^2), o_cc = sum_u n_uc (n_uc - 1) / (m_u - 1).
    """
    u = pd.factorize(np.asarray(units))[0]
    c = pd.factorize(np.asarray(codes))[0].astype(np.int64)
    m = np.bincount(u)
    keep = m[u] >= 2
    u, c = u[keep], c[keep]
    if not len(u):
        return _nan()
    k = int(c.max()) + 1
    keys, n_uc = np.unique(u.astype(np.int64) * k + c, return_counts=True)
    m_u = m[keys // k]
    o_diag = float(np.sum(n_uc * (n_uc - 1) / (m_u - 1)))
    n = float(len(u))
    n_c = np.bincount(c).astype(float)
    expected = n * n - float(np.sum(n_c * n_c))
    if expected == 0:
        return _nan()  # one value used throughout: alpha is undefined
    return 1.0 - (n - 1) * (n - o_diag) / expected


def alpha_interval(units: np.ndarray, values: np.ndarray) -> float:
    """Krippendorff's alpha with the interval metric (squared differences), in closed form."""
    df = pd.DataFrame({"u": units, "v": values.astype(float)})
    m = df.groupby("u").size()
    df = df[df["u"].map(m) >= 2]
    if df.empty:
        return _nan()
    df = df.assign(v2=df["v"] ** 2)
    g = df.groupby("u").agg(m=("v", "size"), s1=("v", "sum"), s2=("v2", "sum"))
    # sum over ordered pairs within a unit of (vi - vj)^2 is 2 (m S2 - S1^2).
    within = float(np.sum(2 * (g["m"] * g["s2"] - g["s1"] ** 2) / (g["m"] - 1)))
    n = float(g["m"].sum())
    total = 2 * (n * float(df["v2"].sum()) - float(df["v"].sum()) ** 2)
    if total == 0:
        return _nan()
    return 1.0 - (n - 1) * within / total


def alpha_ordinal(units: np.ndarray, values: np.ndarray) -> float:
    """Krippendorff's alpha with the ordinal metric, through the (small) coincidence matrix."""
    df = pd.DataFrame({"u": units, "v": values})
    m = df.groupby("u").size()
    df = df[df["u"].map(m) >= 2]
    if df.empty:
        return _nan()
    cats = np.sort(df["v"].unique())
    if len(cats) > 5000:
        raise InvalidValue("The ordinal metric needs fewer than 5000 distinct values; use 'interval'.")
    df = df.assign(c=np.searchsorted(cats, df["v"].to_numpy()))
    m = df.groupby("u").size()
    n_uc = df.groupby(["u", "c"]).size().rename("n").reset_index()
    n_uc["m1"] = n_uc["u"].map(m) - 1
    pairs = n_uc.merge(n_uc[["u", "c", "n"]], on="u", suffixes=("_a", "_b"))
    # o_ck = sum_u (n_uc n_uk - [c = k] n_uc) / (m_u - 1)
    same = (pairs["c_a"] == pairs["c_b"]).to_numpy()
    o_val = (pairs["n_a"] * pairs["n_b"] - np.where(same, pairs["n_a"], 0)) / pairs["m1"]
    k = len(cats)
    o = np.zeros((k, k))
    np.add.at(o, (pairs["c_a"].to_numpy(), pairs["c_b"].to_numpy()), o_val.to_numpy())
    n_c = o.sum(axis=1)
    n = n_c.sum()
    cum = np.concatenate([[0.0], np.cumsum(n_c)])
    idx = np.arange(k)
    lo, hi = np.minimum.outer(idx, idx), np.maximum.outer(idx, idx)
    # delta_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2
    delta = (cum[hi + 1] - cum[lo] - (n_c[:, None] + n_c[None, :]) / 2) ** 2
    expected = float(np.sum(np.outer(n_c, n_c) * delta))
    if expected == 0:
        return _nan()
    return 1.0 - (n - 1) * float(np.sum(o * delta)) / expected


def _alpha(metric: str, units: np.ndarray, values: np.ndarray, codes: np.ndarray) -> float:
    if metric == "interval":
        return alpha_interval(units, values)
    if metric == "ordinal":
        return alpha_ordinal(units, values)
    return alpha_nominal(units, codes)


class Coded:
    """Annotations as integer arrays, with every pair of annotations on the same sample.

    The pairs are found once (one self-merge on the unit); every figure after that (overall,
    each label, each pair of annotators) is a few ``bincount``/``unique`` calls on new codes.
    """

    def __init__(self, units: Any, annotators: Any) -> None:
        self.u = pd.factorize(np.asarray(units))[0]
        self.a, names = pd.factorize(np.asarray(annotators, dtype=object))
        self.names = list(names)
        self.m = np.bincount(self.u) if len(self.u) else np.zeros(0, dtype=int)
        self.pairable = self.m[self.u] >= 2 if len(self.u) else np.zeros(0, dtype=bool)
        idx = pd.DataFrame({"u": self.u, "i": np.arange(len(self.u))})
        both = idx[self.pairable].merge(idx[self.pairable], on="u")
        ia, ib = both["i_x"].to_numpy(), both["i_y"].to_numpy()
        keep = self.a[ia] < self.a[ib]
        self.ia, self.ib = ia[keep], ib[keep]
        n_names = max(1, len(self.names))
        pair_key = self.a[self.ia].astype(np.int64) * n_names + self.a[self.ib]
        keys, self.pair = np.unique(pair_key, return_inverse=True)
        self.pair_a, self.pair_b = keys // n_names, keys % n_names
        self.n_pairs = len(keys)

    def pair_stats(self, codes: np.ndarray) -> pd.DataFrame:
        """Per pair of annotators: items, agreements, Cohen's kappa and the pair's alpha."""
        p = self.n_pairs
        ca, cb = codes[self.ia].astype(np.int64), codes[self.ib].astype(np.int64)
        items = np.bincount(self.pair, minlength=p).astype(float)
        agree = np.bincount(self.pair, weights=(ca == cb), minlength=p)
        k = int(codes.max()) + 1 if len(codes) else 1
        base = self.pair.astype(np.int64) * k
        ka, na = np.unique(base + ca, return_counts=True)
        kb, nb = np.unique(base + cb, return_counts=True)
        common, ix, iy = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
        # Chance agreement: the two annotators' marginal proportions, multiplied, summed.
        prod = np.bincount(common // k, weights=na[ix] * nb[iy].astype(float), minlength=p)
        kall, nall = np.unique(np.concatenate([base + ca, base + cb]), return_counts=True)
        sq = np.bincount(kall // k, weights=nall.astype(float) ** 2, minlength=p)
        with np.errstate(divide="ignore", invalid="ignore"):
            po, pe = agree / items, prod / (items * items)
            kappa = np.where(pe < 1, (po - pe) / (1 - pe), np.nan)
            vals = 2 * items  # two coders: 2N pairable values, o_cc summing to 2 x agreements
            expected = vals * vals - sq
            alpha = np.where(expected > 0, 1 - (vals - 1) * (vals - 2 * agree) / expected, np.nan)
        return pd.DataFrame({
            "a": [self.names[i] for i in self.pair_a], "b": [self.names[i] for i in self.pair_b],
            "items": items.astype(np.int64), "agree": agree, "cohen_kappa": kappa, "krippendorff_alpha": alpha,
        })


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Cohen's kappa of two parallel sequences of labels (one entry per item)."""
    if len(a) != len(b):
        raise InvalidValue("cohen_kappa needs two sequences of the same length.")
    n = len(a)
    codes = pd.factorize(pd.Series(list(a) + list(b), dtype=object))[0]
    coded = Coded(np.concatenate([np.arange(n), np.arange(n)]), ["a"] * n + ["b"] * n)
    table = coded.pair_stats(codes)
    return float(table["cohen_kappa"].iloc[0]) if len(table) else _nan()


def _scope_row(scope: str, name: str, **values: Any) -> dict[str, Any]:
    row = {c: np.nan for c in COLUMNS}
    row.update(scope=scope, name=name, **values)
    return row


def _summary(coded: Coded, codes: np.ndarray, values: np.ndarray, metric: str, scope: str, name: str,
             annotations: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """One row of figures for coded data, and its per-pair table."""
    pairs = coded.pair_stats(codes)
    items_all = pairs["items"].sum()
    observed = float(pairs["agree"].sum() / items_all) if items_all else _nan()
    coders = len(np.unique(coded.a)) if len(coded.a) else 0
    if coders == 2 and len(pairs) == 1:
        kappa = float(pairs["cohen_kappa"].iloc[0])
    elif len(pairs):
        kappa = float(pairs["cohen_kappa"].mean())  # Light's kappa: the mean over pairs
    else:
        kappa = _nan()
    mask = coded.pairable
    if metric == "nominal":
        alpha = alpha_nominal(coded.u[mask], codes[mask])
    else:
        alpha = _alpha(metric, coded.u[mask], values[mask], codes[mask])
    row = _scope_row(
        scope, name, annotators=coders, items=int((coded.m >= 2).sum()), annotations=annotations,
        observed_agreement=observed, cohen_kappa=kappa, krippendorff_alpha=alpha,
    )
    return row, pairs


def _categorical(df: pd.DataFrame, task: AnnotationTask, metric: str) -> list[dict[str, Any]]:
    kind = task.kind
    values = df["value"]
    if kind in ("classification", "text"):
        codes, _ = pd.factorize(values.astype(object))
    else:
        codes, _ = pd.factorize(values.map(value_key))
    numbers = pd.to_numeric(values, errors="coerce").to_numpy() if metric != "nominal" else codes
    coded = Coded(df["sample_id"].to_numpy(), df["annotator"].to_numpy())
    overall, pairs = _summary(coded, codes, numbers, metric, "overall", "", len(df))
    rows = [overall]
    if kind in ("classification", "multilabel"):
        for label in task.labels:
            if kind == "classification":
                member = (values == label).to_numpy()
            else:
                member = values.map(lambda v, lb=label: lb in v).to_numpy(dtype=bool)
            binary = member.astype(np.int64)
            row, _ = _summary(coded, binary, binary, "nominal", "label", label, int(member.sum()))
            rows.append(row)
    rows.extend(_annotator_rows(coded, pairs))
    for r in pairs.itertuples(index=False):
        rows.append(
            _scope_row(
                "pair", f"{r.a} | {r.b}", annotators=2, items=int(r.items),
                annotations=2 * int(r.items), observed_agreement=r.agree / r.items,
                cohen_kappa=r.cohen_kappa, krippendorff_alpha=r.krippendorff_alpha,
            )
        )
    return rows


def _annotator_rows(coded: Coded, pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """Per annotator: annotations, items shared with others, agreement and kappa with them."""
    n = len(coded.names)
    counts = np.bincount(coded.a, minlength=n)
    shared = np.bincount(coded.a[coded.pairable], minlength=n)
    rows = []
    for i in sorted(range(n), key=lambda j: coded.names[j]):
        who = coded.names[i]
        mine = pairs[(pairs["a"] == who) | (pairs["b"] == who)]
        if len(mine):
            rows.append(_scope_row(
                "annotator", who, annotators=1, items=int(shared[i]), annotations=int(counts[i]),
                observed_agreement=float(mine["agree"].sum() / mine["items"].sum()),
                cohen_kappa=float(mine["cohen_kappa"].mean()),
            ))
        else:
            rows.append(_scope_row("annotator", who, annotators=1, items=0, annotations=int(counts[i])))
    return rows


# --------------------------------------------------------------------------- spans and boxes


def _elements(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """One row per span or box: u, a, label and its coordinates."""
    coords = ["start", "end"] if kind == "spans" else ["x", "y", "width", "height"]
    ex = df[["sample_id", "annotator", "value"]].explode("value").dropna(subset=["value"])
    if ex.empty:
        return pd.DataFrame(columns=["u", "a", "label", *coords])
    inner = pd.DataFrame(ex["value"].tolist(), index=ex.index)
    out = pd.DataFrame({"u": ex["sample_id"].to_numpy(), "a": ex["annotator"].to_numpy()})
    out["label"] = inner["label"].to_numpy()
    for c in coords:
        out[c] = inner[c].to_numpy()
    return out.reset_index(drop=True)


def _matched(kind: str, ea: pd.DataFrame, eb: pd.DataFrame) -> pd.DataFrame:
    """Element pairs (of two annotators on one sample) that count as the same annotation."""
    if kind == "spans":
        return ea.merge(eb, on=["u", "label", "start", "end"], suffixes=("_a", "_b"))
    m = ea.merge(eb, on=["u", "label"], suffixes=("_a", "_b"))
    ix = np.maximum(0, np.minimum(m["x_a"] + m["width_a"], m["x_b"] + m["width_b"]) - np.maximum(m["x_a"], m["x_b"]))
    iy = np.maximum(0, np.minimum(m["y_a"] + m["height_a"], m["y_b"] + m["height_b"]) - np.maximum(m["y_a"], m["y_b"]))
    inter = ix * iy
    union = m["width_a"] * m["height_a"] + m["width_b"] * m["height_b"] - inter
    return m[inter / union >= BOX_IOU]


def _f1_pairs(df: pd.DataFrame, kind: str, label: str | None = None) -> pd.DataFrame:
    """Per pair of annotators over the samples both annotated: sizes, matches and F1."""
    units = df[["sample_id", "annotator"]].rename(columns={"sample_id": "u", "annotator": "a"})
    shared = units.merge(units, on="u", suffixes=("_a", "_b"))
    shared = shared[shared["a_a"] < shared["a_b"]].rename(columns={"a_a": "a", "a_b": "b"})
    cols = ["a", "b", "items", "size", "matched", "f1"]
    if shared.empty:
        return pd.DataFrame(columns=cols)
    el = _elements(df, kind)
    if label is not None:
        el = el[el["label"] == label]
    el = el.assign(eid=np.arange(len(el)))
    items = shared.groupby(["a", "b"]).size().rename("items")
    per_unit = el.groupby(["u", "a"]).size().rename("n").reset_index()
    sizes_a = shared.merge(per_unit, on=["u", "a"])[["a", "b", "n"]]
    sizes_b = shared.merge(per_unit.rename(columns={"a": "b"}), on=["u", "b"])[["a", "b", "n"]]
    size = pd.concat([sizes_a, sizes_b]).groupby(["a", "b"])["n"].sum().rename("size")
    ea = shared.merge(el, on=["u", "a"])
    eb = shared.merge(el.rename(columns={"a": "b"}), on=["u", "b"])
    match = _matched(kind, ea.drop(columns=["b"]), eb.drop(columns=["a"]))
    if len(match):
        # Each element counts once however many of the other's elements it overlaps.
        ma = match.drop_duplicates(["a", "b", "eid_a"]).groupby(["a", "b"]).size()
        mb = match.drop_duplicates(["a", "b", "eid_b"]).groupby(["a", "b"]).size()
        matched = ma.add(mb, fill_value=0).rename("matched")
    else:
        matched = pd.Series(dtype=float, name="matched")
    out = pd.concat([items, size, matched], axis=1).fillna(0).reset_index()
    out = out.rename(columns={"level_0": "a", "level_1": "b"})
    with np.errstate(divide="ignore", invalid="ignore"):
        out["f1"] = np.where(out["size"] > 0, out["matched"] / out["size"], np.nan)
    return out[cols]


def _f1_row(pairs: pd.DataFrame, scope: str, name: str, annotations: int, coders: int) -> dict[str, Any]:
    size = pairs["size"].sum() if len(pairs) else 0
    f1 = float(pairs["matched"].sum() / size) if size else _nan()
    items = int(pairs["items"].sum()) if len(pairs) else 0
    return _scope_row(scope, name, annotators=coders, items=items, annotations=annotations, observed_agreement=f1)


def _structured(df: pd.DataFrame, task: AnnotationTask) -> list[dict[str, Any]]:
    pairs = _f1_pairs(df, task.kind)
    rows = [_f1_row(pairs, "overall", "", len(df), df["annotator"].nunique())]
    el = _elements(df, task.kind)
    for label in task.labels:
        lp = _f1_pairs(df, task.kind, label)
        rows.append(_f1_row(lp, "label", label, int((el["label"] == label).sum()), df["annotator"].nunique()))
    counts = df.groupby("annotator").size()
    for who in sorted(counts.index):
        mine = pairs[(pairs["a"] == who) | (pairs["b"] == who)]
        row = _f1_row(mine, "annotator", who, int(counts[who]), 1)
        rows.append(row)
    for r in pairs.itertuples(index=False):
        rows.append(_f1_row(pairs[(pairs["a"] == r.a) & (pairs["b"] == r.b)], "pair", f"{r.a} | {r.b}", 2 * int(r.items), 2))
    return rows


# --------------------------------------------------------------------------- public


def agreement(
    project: str | Project,
    task: str | AnnotationTask,
    *,
    metric: str = "nominal",
    annotators: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Agreement figures as a DataFrame; see :func:`tracker.agreement`."""
    task_obj = get_task(project, task)
    if metric not in METRICS:
        raise InvalidValue(f"metric must be one of {', '.join(METRICS)}, not {metric!r}.")
    if metric != "nominal" and task_obj.kind != "rating":
        raise InvalidValue(
            f"The {metric} metric needs numbers; task {task_obj.name!r} is {task_obj.kind}. Use "
            f"metric='nominal' (the default)."
        )
    names = None
    if annotators is not None:
        if isinstance(annotators, str):
            raise InvalidValue("annotators is a list of usernames, not one string.")
        names = [getattr(a, "username", a) for a in annotators]
    df = load_annotations(task_obj, annotators=names, light=True)
    if df.empty:
        return pd.DataFrame(
            [_scope_row("overall", "", annotators=0, items=0, annotations=0)], columns=COLUMNS
        )
    if task_obj.kind in ("spans", "boxes"):
        rows = _structured(df, task_obj)
    else:
        rows = _categorical(df, task_obj, metric)
    out = pd.DataFrame(rows, columns=COLUMNS)
    for c in ("annotators", "items", "annotations"):
        out[c] = out[c].astype("int64")
    for c in ("observed_agreement", "cohen_kappa", "krippendorff_alpha"):
        out[c] = out[c].astype("float64")
    return out


def _strategies(strategy: Any) -> tuple[str, ...]:
    chain = (strategy,) if isinstance(strategy, str) else tuple(strategy)
    if not chain or any(s not in STRATEGIES for s in chain):
        raise InvalidValue(
            f"strategy must be one of {', '.join(STRATEGIES)} or a sequence of them tried in "
            f"order (for example ('accepted', 'majority')); got {strategy!r}."
        )
    return chain


def _majority_of_elements(group: pd.DataFrame, kind: str, labels: list[str]) -> pd.DataFrame:
    """Per sample, the elements (labels or spans) chosen by more than half of its annotators."""
    voters = group.groupby("sample_id").size().rename("voters")
    ex = group[["sample_id", "value"]].explode("value").dropna(subset=["value"])
    ex["k"] = ex["value"].map(value_key)
    votes = ex.groupby(["sample_id", "k"]).size().rename("votes").reset_index()
    votes = votes.join(voters, on="sample_id")
    kept = votes[votes["votes"] * 2 > votes["voters"]]
    first = ex.drop_duplicates("k").set_index("k")["value"]
    order = {lb: i for i, lb in enumerate(labels)}
    chosen = kept.groupby("sample_id")["k"].agg(list).to_dict() if len(kept) else {}
    out = []
    for sample_id, n in voters.items():
        vals = [first[k] for k in chosen.get(sample_id, [])]
        if kind == "multilabel":
            vals = sorted(vals, key=order.__getitem__)
        else:
            vals = sorted(vals, key=lambda s: (s["start"], s["end"], s["label"]))
        out.append((sample_id, vals, n))
    return pd.DataFrame(out, columns=["sample_id", "value", "votes"])


def resolve_frame(
    task: AnnotationTask, strategy: Any = "majority", *, sample_ids: Sequence[int] | None = None
) -> pd.DataFrame:
    """Final labels per sample: external_id, sample_id, value, strategy (the rule that decided),
    votes, annotations."""
    chain = _strategies(strategy)
    cols = ["sample_id", "value", "strategy", "votes", "annotations"]
    df = load_annotations(task, sample_ids=sample_ids, exclude_rejected=True)
    if df.empty:
        return pd.DataFrame(columns=["external_id", *cols])
    df["k"] = df["value"].map(value_key)
    n_ann = df.groupby("sample_id").size()
    decided: list[pd.DataFrame] = []
    left = df
    for rule in chain:
        if left.empty:
            break
        if rule == "accepted":
            acc = left[left["status"] == Annotation.Status.ACCEPTED]
            acc = acc.sort_values(["reviewed_at", "updated_at"], na_position="first")
            last = acc.drop_duplicates("sample_id", keep="last")
            votes = acc.groupby(["sample_id", "k"]).size()
            got = last[["sample_id", "value", "k"]].join(votes.rename("votes"), on=["sample_id", "k"])
        elif rule == "latest":
            last = left.sort_values("updated_at").drop_duplicates("sample_id", keep="last")
            got = last[["sample_id", "value"]].assign(votes=1)
        elif task.kind in ("multilabel", "spans"):
            got = _majority_of_elements(left, task.kind, task.labels)
        else:
            counts = left.groupby(["sample_id", "k"]).size().rename("votes").reset_index()
            counts = counts.sort_values(["sample_id", "votes"], ascending=[True, False])
            top = counts.drop_duplicates("sample_id")
            second = counts[counts.duplicated("sample_id")].drop_duplicates("sample_id")
            tied = top.merge(second, on="sample_id", suffixes=("", "_2"))
            tied = set(tied.loc[tied["votes"] == tied["votes_2"], "sample_id"])
            top = top[~top["sample_id"].isin(tied)]
            first = left.drop_duplicates("k").set_index("k")["value"]
            got = top.assign(value=top["k"].map(first))[["sample_id", "value", "votes"]]
        got = got[["sample_id", "value", "votes"]].assign(strategy=rule)
        decided.append(got)
        left = left[~left["sample_id"].isin(got["sample_id"])]
    if not decided:
        return pd.DataFrame(columns=["external_id", *cols])
    out = pd.concat(decided, ignore_index=True)
    out["annotations"] = out["sample_id"].map(n_ann).astype("int64")
    out["external_id"] = out["sample_id"].map(df.drop_duplicates("sample_id").set_index("sample_id")["external_id"])
    out["votes"] = out["votes"].astype("int64")
    return out.sort_values("sample_id", ignore_index=True)[["external_id", *cols]]


def resolve_labels(
    project: str | Project,
    task: str | AnnotationTask,
    strategy: str | Sequence[str] = "majority",
    *,
    samples: Iterable[Any] | None = None,
) -> pd.DataFrame:
    """Final labels per sample as a DataFrame; see :func:`tracker.resolve_labels`."""
    from tracker.models import Sample

    task_obj = get_task(project, task)
    ids = None
    if samples is not None:
        if hasattr(samples, "values_list"):
            ids = list(samples.values_list("pk", flat=True))
        else:
            ids = [s.pk if isinstance(s, Sample) else s for s in samples]
            if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
                raise InvalidValue("samples is a list of Samples or sample ids, or a queryset.")
    return resolve_frame(task_obj, strategy, sample_ids=ids)
