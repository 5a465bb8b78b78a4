"""Agreement checked against hand-computed examples from the literature, and label resolution.

Sources:
- Krippendorff, K. (2011). Computing Krippendorff's Alpha-Reliability. Annenberg School for
  Communication, University of Pennsylvania. Example A (binary, two observers): alpha = 0.095;
  example B (nominal, two observers): alpha = 0.692; example C (four observers, five values,
  missing data): nominal 0.743, ordinal 0.815, interval 0.849.
- Cohen's kappa, the worked examples of the Wikipedia article "Cohen's kappa" (50 grant
  proposals: kappa = 0.4; two 100-item tables with 60% agreement: kappa = 0.1304 and 0.2593).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import tracker
from tracker.exceptions import InvalidValue
from tracker.services.agreement import alpha_interval, alpha_nominal, alpha_ordinal, cohen_kappa

pytestmark = pytest.mark.django_db

# Krippendorff (2011), example C: rows are observers A-D, columns units 1-12, None = missing.
KRIPP_C = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}
KRIPP_A = {"A": [0, 1, 0, 0, 0, 0, 0, 0, 1, 0], "B": [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]}
KRIPP_B = {
    "A": list("aabbdcccedda"),
    "B": list("babbbcccedd") + ["d"],
}


def _long(table):
    units, coders, values = [], [], []
    for coder, row in table.items():
        for unit, v in enumerate(row):
            if v is not None:
                units.append(unit), coders.append(coder), values.append(v)
    return np.array(units), coders, values


def _cohen_table(yy, yn, ny, nn):
    a = ["yes"] * (yy + yn) + ["no"] * (ny + nn)
    b = ["yes"] * yy + ["no"] * yn + ["yes"] * ny + ["no"] * nn
    return a, b


@pytest.mark.parametrize(
    "table, expected",
    [((20, 5, 10, 15), 0.4), ((45, 15, 25, 15), 0.1304), ((25, 35, 5, 35), 0.2593)],
)
def test_cohen_kappa_textbook_examples(table, expected):
    a, b = _cohen_table(*table)
    assert cohen_kappa(a, b) == pytest.approx(expected, abs=5e-5)


def test_krippendorff_alpha_worked_examples():
    u, _, v = _long(KRIPP_C)
    codes = pd.factorize(pd.Series(v))[0]
    assert round(alpha_nominal(u, codes), 3) == 0.743
    assert round(alpha_ordinal(u, np.array(v)), 3) == 0.815
    assert round(alpha_interval(u, np.array(v)), 3) == 0.849
    u, _, v = _long(KRIPP_A)
    assert round(alpha_nominal(u, np.array(v)), 3) == 0.095
    u, _, v = _long(KRIPP_B)
    assert round(alpha_nominal(u, pd.factorize(pd.Series(v))[0]), 3) == 0.692


def test_alpha_is_undefined_without_variation():
    u = np.array([0, 0, 1, 1])
    assert math.isnan(alpha_nominal(u, np.array([1, 1, 1, 1])))
    assert math.isnan(alpha_nominal(np.array([0, 1]), np.array([1, 2])))  # nothing pairable


def _load(project, task, table, kind="classification", **kw):
    n_units = len(next(iter(table.values())))
    tracker.add_samples(project, [{"id": f"u{i:02d}"} for i in range(n_units)])
    values = sorted({str(v) for row in table.values() for v in row if v is not None})
    if kind == "rating":
        tracker.define_task(project, task, "rating", **kw)
    else:
        tracker.define_task(project, task, kind, values, **kw)
    rows = [
        {"external_id": f"u{i:02d}", "annotator": coder, "value": v if kind == "rating" else str(v)}
        for coder, row in table.items()
        for i, v in enumerate(row)
        if v is not None
    ]
    tracker.import_annotations(project, task, rows)


def test_agreement_frame_on_krippendorffs_four_observers():
    _load("k", "c", KRIPP_C, kind="rating", scale=(1, 5))
    f = tracker.agreement("k", "c").set_index(["scope", "name"])
    overall = f.loc[("overall", "")]
    assert round(overall["krippendorff_alpha"], 3) == 0.743
    assert (overall["annotators"], overall["items"], overall["annotations"]) == (4, 11, 41)
    assert round(tracker.agreement("k", "c", metric="ordinal").iloc[0]["krippendorff_alpha"], 3) == 0.815
    assert round(tracker.agreement("k", "c", metric="interval").iloc[0]["krippendorff_alpha"], 3) == 0.849
    # Pair A-D by hand: 9 shared units, 8 agree; chance 21/81 -> kappa 51/60.
    ad = f.loc[("pair", "A | D")]
    assert (ad["items"], ad["observed_agreement"]) == (9, pytest.approx(8 / 9))
    assert ad["cohen_kappa"] == pytest.approx(51 / 60)
    pairs = f.loc["pair"]
    assert len(pairs) == 6
    # More than two annotators: kappa is Light's, the mean of the pairwise kappas.
    assert overall["cohen_kappa"] == pytest.approx(pairs["cohen_kappa"].mean())
    a = f.loc[("annotator", "A")]
    assert (a["annotations"], a["items"]) == (9, 9)
    assert a["cohen_kappa"] == pytest.approx(pairs.loc[["A | B", "A | C", "A | D"], "cohen_kappa"].mean())


def test_agreement_two_annotators_binary_with_labels():
    _load("b", "t", KRIPP_A)
    f = tracker.agreement("b", "t").set_index(["scope", "name"])
    overall = f.loc[("overall", "")]
    assert round(overall["krippendorff_alpha"], 3) == 0.095
    # Kappa by hand: po = 0.6, pe = 0.2 * 0.4 + 0.8 * 0.6 = 0.56.
    assert overall["cohen_kappa"] == pytest.approx((0.6 - 0.56) / 0.44)
    assert overall["observed_agreement"] == pytest.approx(0.6)
    # With two values, each label against the rest is the same data.
    assert f.loc[("label", "1"), "krippendorff_alpha"] == pytest.approx(overall["krippendorff_alpha"])
    assert f.loc[("label", "1"), "annotations"] == 6
    assert f.loc[("pair", "A | B"), "cohen_kappa"] == pytest.approx(overall["cohen_kappa"])
    assert list(f.index.get_level_values(0)) == ["overall", "label", "label", "annotator", "annotator", "pair"]


def test_agreement_nominal_example_b_and_filters():
    _load("nb", "t", KRIPP_B)
    assert round(tracker.agreement("nb", "t").iloc[0]["krippendorff_alpha"], 3) == 0.692
    only_a = tracker.agreement("nb", "t", annotators=["A"])
    assert only_a.iloc[0]["items"] == 0 and math.isnan(only_a.iloc[0]["krippendorff_alpha"])
    with pytest.raises(InvalidValue, match="needs numbers"):
        tracker.agreement("nb", "t", metric="interval")
    with pytest.raises(InvalidValue, match="metric must be one of"):
        tracker.agreement("nb", "t", metric="ratio")


def test_agreement_without_annotations():
    tracker.define_task("empty", "t", "classification", ["a"])
    f = tracker.agreement("empty", "t")
    assert len(f) == 1 and f.iloc[0]["annotations"] == 0


def test_multilabel_agreement_per_label():
    tracker.add_samples("ml", [{"id": "a"}, {"id": "b"}])
    tracker.define_task("ml", "t", "multilabel", ["x", "y"])
    tracker.import_annotations("ml", "t", [
        {"external_id": "a", "annotator": "p", "value": ["x", "y"]},
        {"external_id": "a", "annotator": "q", "value": ["x"]},
        {"external_id": "b", "annotator": "p", "value": []},
        {"external_id": "b", "annotator": "q", "value": []},
    ])
    f = tracker.agreement("ml", "t").set_index(["scope", "name"])
    assert f.loc[("overall", ""), "observed_agreement"] == 0.5  # exact sets agree on b only
    assert f.loc[("label", "x"), "observed_agreement"] == 1.0  # both chose x on a, neither on b
    assert f.loc[("label", "y"), "observed_agreement"] == 0.5
    assert f.loc[("label", "x"), "annotations"] == 2


def test_span_and_box_agreement_is_pairwise_f1():
    tracker.add_samples("sb", [{"id": "a", "text": "Alice in Rome now", "width": 100, "height": 100}])
    tracker.define_task("sb", "ner", "spans", ["PER", "LOC"])
    tracker.define_task("sb", "obj", "boxes", ["car"])
    tracker.import_annotations("sb", "ner", [
        {"external_id": "a", "annotator": "p", "value": [(0, 5, "PER"), (9, 13, "LOC")]},
        {"external_id": "a", "annotator": "q", "value": [(0, 5, "PER"), (9, 17, "LOC")]},
    ])
    f = tracker.agreement("sb", "ner").set_index(["scope", "name"])
    assert f.loc[("overall", ""), "observed_agreement"] == 0.5
    assert f.loc[("label", "PER"), "observed_agreement"] == 1.0
    assert f.loc[("label", "LOC"), "observed_agreement"] == 0.0
    assert f.loc[("pair", "p | q"), "observed_agreement"] == 0.5
    assert math.isnan(f.loc[("overall", ""), "krippendorff_alpha"])
    tracker.import_annotations("sb", "obj", [
        {"external_id": "a", "annotator": "p", "value": [(0, 0, 10, 10, "car")]},
        # IoU of the first two boxes is 81/119 >= 0.5: a match; the second box is extra.
        {"external_id": "a", "annotator": "q", "value": [(1, 1, 10, 10, "car"), (50, 50, 5, 5, "car")]},
    ])
    f = tracker.agreement("sb", "obj").set_index(["scope", "name"])
    assert f.loc[("overall", ""), "observed_agreement"] == pytest.approx(2 / 3)
    assert f.loc[("annotator", "q"), "observed_agreement"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- resolution


@pytest.fixture
def votes():
    tracker.add_samples("r", [{"id": f"s{i}"} for i in range(5)])
    tracker.define_task("r", "t", "classification", ["a", "b"])
    tracker.import_annotations("r", "t", [
        {"external_id": "s0", "annotator": "p", "value": "a", "updated_at": "2024-01-01T00:00:00Z"},
        {"external_id": "s0", "annotator": "q", "value": "a", "updated_at": "2024-01-02T00:00:00Z"},
        {"external_id": "s0", "annotator": "r", "value": "b", "updated_at": "2024-01-03T00:00:00Z"},
        {"external_id": "s1", "annotator": "p", "value": "a", "updated_at": "2024-01-01T00:00:00Z"},
        {"external_id": "s1", "annotator": "q", "value": "b", "updated_at": "2024-01-02T00:00:00Z"},
        {"external_id": "s2", "annotator": "p", "value": "b", "status": "accepted"},
        {"external_id": "s2", "annotator": "q", "value": "a"},
        {"external_id": "s2", "annotator": "r", "value": "a"},
        {"external_id": "s3", "annotator": "p", "value": "b", "status": "rejected", "review_comment": "no"},
    ])


def test_resolve_majority_latest_accepted_and_chains(votes):
    maj = tracker.resolve_labels("r", "t").set_index("external_id")
    assert maj["value"].to_dict() == {"s0": "a", "s2": "a"}  # s1 ties; s3 only rejected
    assert maj.loc["s0", ["votes", "annotations", "strategy"]].tolist() == [2, 3, "majority"]
    latest = tracker.resolve_labels("r", "t", "latest").set_index("external_id")
    assert latest.loc["s0", "value"] == "b" and latest.loc["s1", "value"] == "b"
    acc = tracker.resolve_labels("r", "t", "accepted")
    assert acc["external_id"].tolist() == ["s2"] and acc["value"].tolist() == ["b"]
    chain = tracker.resolve_labels("r", "t", ("accepted", "majority", "latest")).set_index("external_id")
    assert chain["value"].to_dict() == {"s0": "a", "s1": "b", "s2": "b"}
    assert chain["strategy"].to_dict() == {"s0": "majority", "s1": "latest", "s2": "accepted"}
    from tracker.models import Sample

    only = tracker.resolve_labels("r", "t", samples=Sample.objects.filter(external_id="s0"))
    assert only["external_id"].tolist() == ["s0"]
    with pytest.raises(InvalidValue, match="strategy must be one of accepted, majority, latest"):
        tracker.resolve_labels("r", "t", "vote")


def test_resolve_majority_per_span_and_rating():
    tracker.add_samples("rs", [{"id": "a", "text": "Alice met Bob"}])
    tracker.define_task("rs", "ner", "spans", ["PER"])
    tracker.define_task("rs", "stars", "rating")
    tracker.import_annotations("rs", "ner", [
        {"external_id": "a", "annotator": "p", "value": [(0, 5, "PER"), (10, 13, "PER")]},
        {"external_id": "a", "annotator": "q", "value": [(0, 5, "PER")]},
        {"external_id": "a", "annotator": "r", "value": [(0, 5, "PER"), (10, 13, "PER")]},
    ])
    out = tracker.resolve_labels("rs", "ner")
    assert out["value"].tolist() == [[{"start": 0, "end": 5, "label": "PER"}, {"start": 10, "end": 13, "label": "PER"}]]
    tracker.import_annotations("rs", "stars", [
        {"external_id": "a", "annotator": "p", "value": 4},
        {"external_id": "a", "annotator": "q", "value": 4},
        {"external_id": "a", "annotator": "r", "value": 2},
    ])
    assert tracker.resolve_labels("rs", "stars")["value"].tolist() == [4]
