"""Annotation values checked against their task's kind (private to the labeling services)."""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from tracker.exceptions import InvalidAnnotation
from tracker.models import AnnotationTask, Sample

# Boxes converted from Label Studio's percentages can overshoot the image edge by rounding.
_EDGE_TOLERANCE = 1e-6


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _where(task: AnnotationTask, sample: Sample | None) -> str:
    sid = f"sample {sample.external_id!r}, " if sample is not None else ""
    return f"{sid}task {task.name!r} ({task.kind})"


class _Where:
    """"sample 'x', task 'y' (kind)", formatted only when an error message needs it."""

    __slots__ = ("task", "sample")

    def __init__(self, task: AnnotationTask, sample: Any) -> None:
        self.task, self.sample = task, sample

    def __str__(self) -> str:
        return _where(self.task, self.sample)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def suggest(given: str, options: Sequence[str]) -> str | None:
    """The option ``given`` most likely meant: same letters ignoring case, a prefix, or close."""
    low = given.lower()
    for opt in options:
        if opt.lower() == low:
            return opt
    close = difflib.get_close_matches(given, options, n=1)
    if close:
        return close[0]
    prefixed = [o for o in options if low and (o.lower().startswith(low) or low.startswith(o.lower()))]
    return prefixed[0] if len(prefixed) == 1 else None


def _unknown_label(task: AnnotationTask, sample: Sample | None, label: Any) -> InvalidAnnotation:
    close = suggest(str(label), task.labels)
    hint = f" Did you mean {close!r}?" if close else ""
    return InvalidAnnotation(
        f"{_where(task, sample)}: {label!r} is not one of the labels {', '.join(map(repr, task.labels))}."
        f"{hint} Add new labels with tracker.define_task(..., labels=[...])."
    )


def sample_text(task: AnnotationTask, sample: Sample) -> str:
    """The text a spans task annotates: ``sample.data[text_field]``."""
    field = task.config.get("text_field") or "text"
    text = (sample.data or {}).get(field)
    if not isinstance(text, str):
        raise InvalidAnnotation(
            f"{_where(task, sample)}: spans need the text in sample.data[{field!r}], but the "
            f"sample has {'no such field' if text is None else type(text).__name__}. Set "
            f"text_field= in define_task to the field that holds the text."
        )
    return text


def image_size(task: AnnotationTask, sample: Sample) -> tuple[float, float]:
    """(width, height) of a sample's image: from its data, its metadata, or the stored file."""
    wf = task.config.get("width_field") or "width"
    hf = task.config.get("height_field") or "height"
    for source in (sample.data or {}, sample.metadata or {}):
        w, h = source.get(wf), source.get(hf)
        if is_number(w) and is_number(h) and w > 0 and h > 0:
            return float(w), float(h)
    if sample.media:
        try:
            from PIL import Image

            with sample.media.open("rb") as fh, Image.open(fh) as img:
                return float(img.width), float(img.height)
        except Exception:  # unreadable media: reported below like a missing size
            pass
    raise InvalidAnnotation(
        f"{_where(task, sample)}: boxes are checked against the image size, but the sample has "
        f"no {wf!r}/{hf!r} in its data or metadata and no readable image file. Add the size "
        f"to the sample (tracker.add_samples with {wf!r} and {hf!r})."
    )


def check_value(task: AnnotationTask, value: Any, sample: Sample | None = None) -> Any:
    """``value`` normalised for storage, or :class:`InvalidAnnotation` saying what is wrong.

    Spans and boxes need ``sample`` (the text and the image size come from it).
    """
    kind = task.kind
    where = _Where(task, sample)
    if value is None:
        raise InvalidAnnotation(f"{where}: the value is None; give a value of the task's kind.")
    if kind == "classification":
        if isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str):
            raise InvalidAnnotation(
                f"{where}: a classification value is one label (a string), not "
                f"{type(value).__name__} {value!r:.60}."
            )
        if value not in task.labels:
            raise _unknown_label(task, sample, value)
        return value
    if kind == "multilabel":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise InvalidAnnotation(f"{where}: a multilabel value is a list of labels, not {type(value).__name__}.")
        for label in value:
            if not isinstance(label, str) or label not in task.labels:
                raise _unknown_label(task, sample, label)
        order = {lb: i for i, lb in enumerate(task.labels)}
        return sorted(set(value), key=order.__getitem__)
    if kind == "spans":
        return _check_spans(task, value, sample)
    if kind == "boxes":
        return _check_boxes(task, value, sample)
    if kind == "text":
        if not isinstance(value, str):
            raise InvalidAnnotation(f"{where}: a text value is a string, not {type(value).__name__}.")
        ml = task.config.get("max_length")
        if ml is not None and len(value) > ml:
            raise InvalidAnnotation(f"{where}: the text has {len(value)} characters; at most {ml} are allowed.")
        return value
    if kind == "rating":
        if not is_number(value):
            raise InvalidAnnotation(f"{where}: a rating is a number, not {value!r:.60}.")
        lo, hi = task.config.get("scale", [1, 5])
        if not lo <= value <= hi:
            raise InvalidAnnotation(f"{where}: the rating {value} is outside the scale {lo}..{hi}.")
        step = task.config.get("step", 1)
        if step:
            k = (value - lo) / step
            if abs(k - round(k)) > 1e-9:
                raise InvalidAnnotation(
                    f"{where}: the rating {value} is not on the scale's steps of {step} from {lo}."
                )
        if isinstance(value, float) and value.is_integer() and float(step).is_integer() and step:
            return int(value)
        return value
    raise InvalidAnnotation(f"{where}: unknown kind.")  # pragma: no cover - kinds are checked


def _items(value: Any, what: str, where: str) -> list[Any]:
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise InvalidAnnotation(f"{where}: {what} are given as a list, not {type(value).__name__}.")
    return list(value)


def _check_spans(task: AnnotationTask, value: Any, sample: Sample | None) -> list[dict[str, Any]]:
    where = _where(task, sample)
    items = _items(value, "spans", where)
    if sample is None:
        raise InvalidAnnotation(f"{where}: spans are checked against a sample's text; give the sample.")
    text = sample_text(task, sample)
    out: dict[tuple[int, int, str], dict[str, Any]] = {}
    for i, item in enumerate(items):
        if isinstance(item, (list, tuple)) and len(item) == 3:
            item = {"start": item[0], "end": item[1], "label": item[2]}
        if not isinstance(item, Mapping) or not {"start", "end", "label"} <= set(item):
            raise InvalidAnnotation(
                f"{where}: span {i} must be {{'start': int, 'end': int, 'label': str}} or "
                f"(start, end, label); got {item!r:.80}."
            )
        start, end, label = item["start"], item["end"], item["label"]
        if any(isinstance(x, bool) or not isinstance(x, int) for x in (start, end)):
            raise InvalidAnnotation(f"{where}: span {i} offsets must be whole numbers; got {start!r}..{end!r}.")
        if not 0 <= start < end <= len(text):
            raise InvalidAnnotation(
                f"{where}: span {i} ({start}..{end}) is outside the text, which has {len(text)} "
                f"characters; offsets are 0 <= start < end <= {len(text)}."
            )
        if label not in task.labels:
            raise _unknown_label(task, sample, label)
        if "text" in item and item["text"] is not None and item["text"] != text[start:end]:
            raise InvalidAnnotation(
                f"{where}: span {i} says its text is {item['text']!r}, but characters "
                f"{start}..{end} are {text[start:end]!r}; check the offsets."
            )
        out[(start, end, label)] = {"start": start, "end": end, "label": label}
    return [out[k] for k in sorted(out)]


def _check_boxes(task: AnnotationTask, value: Any, sample: Sample | None) -> list[dict[str, Any]]:
    where = _where(task, sample)
    items = _items(value, "boxes", where)
    if sample is None:
        raise InvalidAnnotation(f"{where}: boxes are checked against a sample's image; give the sample.")
    width, height = image_size(task, sample)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, (list, tuple)) and len(item) == 5:
            item = dict(zip(("x", "y", "width", "height", "label"), item))
        keys = ("x", "y", "width", "height", "label")
        if not isinstance(item, Mapping) or not set(keys) <= set(item):
            raise InvalidAnnotation(
                f"{where}: box {i} must be {{'x', 'y', 'width', 'height', 'label'}} in pixels "
                f"or (x, y, width, height, label); got {item!r:.80}."
            )
        x, y, w, h, label = (item[k] for k in keys)
        if not all(is_number(v) for v in (x, y, w, h)):
            raise InvalidAnnotation(f"{where}: box {i} needs finite numbers for x, y, width, height.")
        if w <= 0 or h <= 0:
            raise InvalidAnnotation(f"{where}: box {i} has width {w} and height {h}; both must be > 0.")
        tol = _EDGE_TOLERANCE * max(width, height)
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            raise InvalidAnnotation(
                f"{where}: box {i} (x={x}, y={y}, width={w}, height={h}) is outside the "
                f"{width:g}x{height:g} image; keep 0 <= x, x + width <= {width:g}, 0 <= y, "
                f"y + height <= {height:g}."
            )
        if label not in task.labels:
            raise _unknown_label(task, sample, label)
        out.append({"x": x, "y": y, "width": w, "height": h, "label": label})
    out.sort(key=lambda b: (b["label"], b["x"], b["y"], b["width"], b["height"]))
    return out


def value_key(value: Any) -> str:
    """A canonical string of a stored value, for equality and counting."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
