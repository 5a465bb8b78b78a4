"""The in-notebook labelling UI (ipywidgets): text with highlighted spans, images with boxes, JSON.

Every label is saved through the core as soon as it is given (``tracker._dispatch.call``: on the
kernel's database thread), so closing the notebook loses nothing. Keyboard shortcuts work in
every Jupyter frontend without extensions: keys typed into the shortcut box are read and acted
on one by one, then the box is cleared.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import ipywidgets as w
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tracker.label() needs ipywidgets: pip install 'tracker[widgets]' (and restart the kernel)."
    ) from exc

from tracker._dispatch import call
from tracker.exceptions import InvalidValue, TrackerError

# Label colours for highlights and boxes, reused in order.
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
           "#bcf60c", "#008080", "#9a6324"]
NAV_KEYS = {"n": "next", "b": "back", "s": "skip"}
MAX_IMAGE_BYTES = 20 * 1024 * 1024


@dataclass
class LabelState:
    """What the widget works on, loaded in one core call."""

    task: Any
    annotator: Any
    samples: list[Any]
    values: dict[int, Any]
    project: Any = None  # set in queue mode
    strategy: str = "unlabeled"
    batch: int = 10
    skipped: set[int] = field(default_factory=set)

    @property
    def queue(self) -> bool:
        return self.project is not None


def load_state(samples: Any, task: Any, annotator: Any, *, strategy: str = "unlabeled", batch: int = 10) -> LabelState:
    """Resolve the task, the annotator and the samples (or the first queue batch) for a widget."""
    from django.db.models import QuerySet

    from tracker.models import Annotation, Project, Sample
    from tracker.services import labeling, queue

    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= queue.MAX_BATCH:
        raise InvalidValue(f"batch must be a whole number from 1 to {queue.MAX_BATCH}, not {batch!r}.")
    if isinstance(samples, (str, Project)):
        task_obj = labeling.get_task(samples, task)
        user = labeling.get_user(annotator)
        first = queue.next_samples(task_obj.project, task_obj, batch, user, strategy)
        return LabelState(task_obj, user, first, {}, task_obj.project, strategy, batch)
    if isinstance(samples, Sample):
        samples = [samples]
    if isinstance(samples, QuerySet):
        sample_list = list(samples)
    else:
        try:
            sample_list = list(samples)
        except TypeError:
            raise InvalidValue(
                f"label() takes a list or queryset of Samples, or a project name for its queue; "
                f"not {type(samples).__name__}."
            ) from None
    if not all(isinstance(s, Sample) for s in sample_list):
        raise InvalidValue("label() takes Samples (a list or a queryset), or a project name for its queue.")
    if isinstance(task, str):
        if not sample_list:
            raise InvalidValue(f"No samples to label; pass the task as tracker.get_task(project, {task!r}) to start empty.")
        task_obj = labeling.get_task(sample_list[0].project, task)
    else:
        task_obj = labeling.get_task(None, task)
    for s in sample_list:
        if s.project_id != task_obj.project_id:
            raise InvalidValue(f"Sample {s.external_id!r} is not in task {task_obj.name!r}'s project.")
    user = labeling.get_user(annotator)
    ids = [s.pk for s in sample_list]
    values: dict[int, Any] = {}
    for start in range(0, len(ids), labeling.CHUNK):
        values.update(
            Annotation.objects.filter(task=task_obj, annotator=user, sample_id__in=ids[start : start + labeling.CHUNK])
            .values_list("sample_id", "value")
        )
    return LabelState(task_obj, user, sample_list, values)


def _save(task: Any, sample: Any, value: Any, annotator: Any) -> Any:
    from tracker.services import labeling

    return labeling.annotate(sample, task, value, annotator).value


def _more(state: LabelState) -> list[Any]:
    from tracker.services import queue

    return queue.next_samples(
        state.project, state.task, state.batch, state.annotator, state.strategy,
        exclude=[s.pk for s in state.samples],
    )


def _release(state: LabelState, sample: Any) -> None:
    from tracker.services import queue

    queue.release(state.project, state.task, [sample], state.annotator)


def _colour(labels: list[str], label: str) -> str:
    return PALETTE[labels.index(label) % len(PALETTE)] if label in labels else "#888"


def render_text(text: str, spans: list[dict[str, Any]] | None, labels: list[str]) -> str:
    """HTML of ``text`` with spans highlighted (outermost span wins where they overlap)."""
    spans = sorted(spans or [], key=lambda s: (s["start"], -s["end"]))
    out, pos = [], 0
    for s in spans:
        if s["start"] < pos:
            continue  # overlapping spans are listed below the text instead
        out.append(html.escape(text[pos : s["start"]]))
        colour = _colour(labels, s["label"])
        out.append(
            f'<mark style="background:{colour}33;border-bottom:2px solid {colour}" '
            f'title="{html.escape(s["label"])} [{s["start"]}:{s["end"]}]">'
            f'{html.escape(text[s["start"] : s["end"]])}<sup style="color:{colour}">'
            f'{html.escape(s["label"])}</sup></mark>'
        )
        pos = s["end"]
    out.append(html.escape(text[pos:]))
    body = "".join(out).replace("\n", "<br>")
    return f'<div style="white-space:pre-wrap;font-size:1.05em;line-height:1.6">{body}</div>'


def render_json(data: Any) -> str:
    return f"<pre>{html.escape(json.dumps(data, indent=2, ensure_ascii=False, default=str))}</pre>"


def image_source(task: Any, sample: Any) -> str | None:
    """A URL or data: URI for the sample's image (data field, stored media, or media URI)."""
    fieldname = task.config.get("image_field") or "image"
    ref = (sample.data or {}).get(fieldname)
    if isinstance(ref, str) and ref:
        if ref.startswith(("http://", "https://", "data:")):
            return ref
        path = Path(ref).expanduser()
        if path.is_file() and path.stat().st_size <= MAX_IMAGE_BYTES:
            mime = mimetypes.guess_type(path.name)[0] or "image/png"
            return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
        return ref
    if sample.media:
        with sample.media.open("rb") as fh:
            raw = fh.read(MAX_IMAGE_BYTES + 1)
        if len(raw) <= MAX_IMAGE_BYTES:
            mime = mimetypes.guess_type(sample.media.name)[0] or "image/png"
            return f"data:{mime};base64,{base64.b64encode(raw).decode()}"
    return sample.media_uri or None


def render_image(src: str | None, size: tuple[float, float] | None, boxes: list[dict[str, Any]] | None,
                 labels: list[str]) -> str:
    """SVG of the image with its boxes drawn on top (pixel coordinates)."""
    if src is None:
        return "<i>This sample has no image.</i>"
    if size is None:
        return f'<img src="{html.escape(src)}" style="max-width:640px">'
    width, height = size
    parts = [
        f'<svg viewBox="0 0 {width:g} {height:g}" width="{min(width, 640):g}" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<image href="{html.escape(src)}" x="0" y="0" width="{width:g}" height="{height:g}"/>',
    ]
    for b in boxes or []:
        colour = _colour(labels, b["label"])
        parts.append(
            f'<rect x="{b["x"]:g}" y="{b["y"]:g}" width="{b["width"]:g}" height="{b["height"]:g}" '
            f'fill="none" stroke="{colour}" stroke-width="{max(width, height) / 300:g}"/>'
            f'<text x="{b["x"]:g}" y="{b["y"]:g}" fill="{colour}" font-size="{max(width, height) / 40:g}">'
            f'{html.escape(b["label"])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


class Labeler(w.VBox):
    """Label samples one at a time; build it with :func:`tracker.label`.

    The buttons call these methods, which can also be called from code: :meth:`choose`,
    :meth:`toggle`, :meth:`set_value`, :meth:`add_span`, :meth:`add_box`, :meth:`remove`,
    :meth:`next`, :meth:`back`, :meth:`skip`, :meth:`press`.
    """

    def __init__(self, state: LabelState, *, shortcuts: dict[str, str] | None = None, auto_advance: bool = True) -> None:
        self.state = state
        self.task = state.task
        self.kind = state.task.kind
        self.labels: list[str] = list(state.task.labels)
        self.auto_advance = auto_advance
        self.index = 0
        self.shortcuts: dict[str, str] = {str(i + 1): lb for i, lb in enumerate(self.labels[:9])}
        self.shortcuts.update(NAV_KEYS)
        if shortcuts:
            for key, target in shortcuts.items():
                if not isinstance(key, str) or len(key) != 1:
                    raise InvalidValue(f"A shortcut is one character; got {key!r}.")
                if target not in self.labels and target not in NAV_KEYS.values() and self.kind not in ("rating",):
                    raise InvalidValue(f"Shortcut {key!r} points at {target!r}, which is not a label of the task.")
                self.shortcuts[key] = target
        self.header = w.HTML()
        self.content = w.HTML()
        self.status = w.HTML()
        self.progress = w.IntProgress(min=0, max=max(1, len(state.samples)), description="done")
        self.progress_text = w.HTML()
        self.key_box = w.Text(
            placeholder="click here, then type shortcuts: " + self._shortcut_help(),
            continuous_update=True, layout=w.Layout(width="100%"),
        )
        self.key_box.observe(self._on_keys, names="value")
        self.back_button = w.Button(description="◀ back [b]")
        self.skip_button = w.Button(description="skip [s]")
        self.next_button = w.Button(description="next [n] ▶")
        self.back_button.on_click(lambda _: self.back())
        self.skip_button.on_click(lambda _: self.skip())
        self.next_button.on_click(lambda _: self.next())
        self.label_buttons: dict[Any, w.Button] = {}
        controls = self._build_controls()
        super().__init__([
            self.header, self.content, controls,
            w.HBox([self.back_button, self.skip_button, self.next_button]),
            self.key_box, w.HBox([self.progress, self.progress_text]), self.status,
        ])
        self._refresh()

    # ------------------------------------------------------------------ state

    @property
    def current(self) -> Any:
        """The sample on screen, or None when all are done."""
        return self.state.samples[self.index] if self.index < len(self.state.samples) else None

    @property
    def value(self) -> Any:
        """This annotator's stored value for the sample on screen (None if not labelled)."""
        cur = self.current
        return None if cur is None else self.state.values.get(cur.pk)

    @property
    def done(self) -> int:
        """How many of this session's samples have a label from this annotator."""
        return sum(1 for s in self.state.samples if s.pk in self.state.values)

    def _shortcut_help(self) -> str:
        if self.kind in ("classification", "multilabel") and self.labels:
            return f"1-{min(9, len(self.labels))} label · n next · b back · s skip"
        return "n next · b back · s skip"

    # ------------------------------------------------------------------ actions

    def set_value(self, value: Any) -> bool:
        """Save ``value`` for the sample on screen now; False (and a message) if it is invalid."""
        cur = self.current
        if cur is None:
            self._say("Nothing to label: all samples are done.", error=True)
            return False
        try:
            stored = call("label", _save, self.task, cur, value, self.state.annotator)
        except TrackerError as exc:
            self._say(str(exc), error=True)
            return False
        self.state.values[cur.pk] = stored
        self.state.skipped.discard(cur.pk)
        self._say(f"Saved for {cur.external_id}.")
        self._refresh(keep_status=True)
        return True

    def choose(self, label: Any) -> bool:
        """Pick a label (classification), toggle it (multilabel), or give a rating."""
        if self.kind == "multilabel":
            return self.toggle(label)
        if self.kind in ("spans", "boxes"):
            return self._add_from_inputs(label)
        ok = self.set_value(label)
        if ok and self.auto_advance and self.kind in ("classification", "rating"):
            self._advance(keep_status=True)
        return ok

    def toggle(self, label: str) -> bool:
        """Add or remove ``label`` in a multilabel value (saved at once)."""
        current = list(self.value or [])
        new = [lb for lb in current if lb != label] if label in current else current + [label]
        return self.set_value(new)

    def add_span(self, start: int, end: int, label: str) -> bool:
        """Add a span over characters ``start:end`` of the text (saved at once)."""
        return self.set_value(list(self.value or []) + [{"start": start, "end": end, "label": label}])

    def add_span_text(self, text: str, label: str, occurrence: int = 1) -> bool:
        """Add a span over the ``occurrence``-th appearance of ``text`` in the sample's text."""
        from tracker.services.labeling import sample_text

        body = sample_text(self.task, self.current) if self.current is not None else ""
        pos = -1
        for _ in range(max(1, occurrence)):
            pos = body.find(text, pos + 1)
            if pos < 0:
                break
        if not text or pos < 0:
            self._say(f"{text!r} does not occur {occurrence} time(s) in the text; type the exact words.", error=True)
            return False
        return self.add_span(pos, pos + len(text), label)

    def add_box(self, x: float, y: float, width: float, height: float, label: str) -> bool:
        """Add a box in image pixels (saved at once)."""
        box = {"x": x, "y": y, "width": width, "height": height, "label": label}
        return self.set_value(list(self.value or []) + [box])

    def remove(self, i: int) -> bool:
        """Remove the ``i``-th span or box (in the listed order; saved at once)."""
        items = list(self.value or [])
        if not 0 <= i < len(items):
            self._say(f"There is no item {i}; this sample has {len(items)}.", error=True)
            return False
        return self.set_value(items[:i] + items[i + 1 :])

    def next(self) -> None:
        """Go to the next sample (in queue mode, claim more when the batch is used up)."""
        self._advance(keep_status=False)

    def _advance(self, *, keep_status: bool) -> None:
        if self.index < len(self.state.samples):
            self.index += 1
        if self.index >= len(self.state.samples) and self.state.queue:
            more = call("label", _more, self.state)
            self.state.samples.extend(more)
            self.progress.max = max(1, len(self.state.samples))
        self._refresh(keep_status=keep_status)

    def back(self) -> None:
        """Go to the previous sample."""
        if self.index > 0:
            self.index -= 1
        self._refresh()

    def skip(self) -> None:
        """Leave the sample unlabelled and move on (in queue mode its claim is given back)."""
        cur = self.current
        if cur is not None and cur.pk not in self.state.values:
            self.state.skipped.add(cur.pk)
            if self.state.queue:
                call("label", _release, self.state, cur)
        self.next()

    def press(self, key: str) -> None:
        """Act on one shortcut key."""
        target = self.shortcuts.get(key)
        if target is None:
            self._say(f"No shortcut {key!r}; {self._shortcut_help()}.", error=True)
        elif target in NAV_KEYS.values() and target not in self.labels:
            getattr(self, target)()
        else:
            self.choose(target)

    # ------------------------------------------------------------------ UI

    def _on_keys(self, change: dict[str, Any]) -> None:
        typed = change.get("new") or ""
        if not typed:
            return
        self.key_box.value = ""
        for ch in typed:
            self.press(ch)

    def _say(self, message: str, *, error: bool = False) -> None:
        colour = "#c00" if error else "#080"
        self.status.value = f'<span style="color:{colour}">{html.escape(message, quote=False)}</span>'

    def _label_button(self, key: Any, text: str, action: Any) -> w.Button:
        b = w.Button(description=text, tooltip=text)
        b.on_click(lambda _: action())
        self.label_buttons[key] = b
        return b

    def _build_controls(self) -> w.Widget:
        keys = {v: k for k, v in self.shortcuts.items()}
        if self.kind in ("classification", "multilabel", "spans", "boxes"):
            buttons = [
                self._label_button(lb, f"{lb} [{keys[lb]}]" if lb in keys else lb, lambda lb=lb: self.choose(lb))
                for lb in self.labels
            ]
            row = w.HBox(buttons, layout=w.Layout(flex_flow="row wrap"))
        if self.kind in ("classification", "multilabel"):
            return row
        if self.kind == "spans":
            self.span_text = w.Text(placeholder="text to label (exact words)", description="span")
            self.span_occurrence = w.BoundedIntText(value=1, min=1, max=10_000, description="occurrence")
            self.item_list = w.Dropdown(description="spans", options=[])
            remove = w.Button(description="remove span")
            remove.on_click(lambda _: self._remove_selected())
            return w.VBox([w.HBox([self.span_text, self.span_occurrence]), row, w.HBox([self.item_list, remove])])
        if self.kind == "boxes":
            self.box_inputs = [w.FloatText(description=n, layout=w.Layout(width="160px")) for n in ("x", "y", "width", "height")]
            self.item_list = w.Dropdown(description="boxes", options=[])
            remove = w.Button(description="remove box")
            remove.on_click(lambda _: self._remove_selected())
            return w.VBox([w.HBox(self.box_inputs), row, w.HBox([self.item_list, remove])])
        if self.kind == "text":
            self.text_input = w.Textarea(placeholder="your text", layout=w.Layout(width="100%"))
            save = w.Button(description="save text", button_style="primary")
            save.on_click(lambda _: self.set_value(self.text_input.value))
            return w.VBox([self.text_input, save])
        lo, hi = self.task.config.get("scale", [1, 5])
        step = self.task.config.get("step", 1)
        if step and (hi - lo) / step <= 10:
            values = [lo + i * step for i in range(int(round((hi - lo) / step)) + 1)]
            values = [int(v) if float(v).is_integer() else v for v in values]
            for i, v in enumerate(values[:9]):
                self.shortcuts.setdefault(str(i + 1), v)
            keys = {v: k for k, v in self.shortcuts.items()}
            return w.HBox([
                self._label_button(v, f"{v} [{keys[v]}]" if v in keys else str(v), lambda v=v: self.choose(v))
                for v in values
            ])
        self.rating_input = w.FloatSlider(min=lo, max=hi, step=step or (hi - lo) / 100)
        save = w.Button(description="save rating", button_style="primary")
        save.on_click(lambda _: self.set_value(self.rating_input.value))
        return w.HBox([self.rating_input, save])

    def _add_from_inputs(self, label: str) -> bool:
        if self.kind == "spans":
            if not self.span_text.value:
                self._say("Type the words to label in the span box first, then pick the label.", error=True)
                return False
            ok = self.add_span_text(self.span_text.value, label, self.span_occurrence.value)
            if ok:
                self.span_text.value = ""
            return ok
        x, y, bw, bh = (i.value for i in self.box_inputs)
        return self.add_box(x, y, bw, bh, label)

    def _remove_selected(self) -> None:
        if self.item_list.value is None:
            self._say("Pick the item to remove first.", error=True)
            return
        self.remove(self.item_list.value)

    def _render(self, sample: Any) -> str:
        """Spans: the highlighted text. Boxes: the image with its boxes. Otherwise the sample's
        text and image when it has them (both, for a captioned image), else its data as JSON."""
        from tracker.services.labeling import image_size

        value = self.state.values.get(sample.pk)
        cfg, data = self.task.config, sample.data or {}
        text = data.get(cfg.get("text_field") or "text")
        has_image = bool(
            self.kind == "boxes" or cfg.get("image_field") or data.get("image") or sample.media or sample.media_uri
        )
        parts = []
        if self.kind != "boxes" and isinstance(text, str):
            parts.append(render_text(text, value if self.kind == "spans" else None, self.labels))
        if self.kind != "spans" and has_image:
            try:
                size = image_size(self.task, sample)
            except TrackerError:
                size = None
            boxes = value if self.kind == "boxes" else None
            parts.append(render_image(image_source(self.task, sample), size, boxes, self.labels))
        return "".join(parts) or render_json(data)

    def _refresh(self, *, keep_status: bool = False) -> None:
        total = len(self.state.samples)
        done = self.done
        self.progress.max = max(1, total)
        self.progress.value = done
        self.progress_text.value = f"{done} / {total} labelled"
        cur = self.current
        instructions = self.task.config.get("instructions") or ""
        if cur is None:
            self.header.value = f"<b>{html.escape(self.task.name)}</b>"
            self.content.value = (
                "<b>The queue is empty: nothing left to label.</b>" if self.state.queue
                else f"<b>All {total} samples seen; {done} labelled.</b>"
            )
        else:
            self.header.value = (
                f"<b>{html.escape(self.task.name)}</b> · sample {self.index + 1} of {total} · "
                f"<code>{html.escape(cur.external_id)}</code>"
                + (f"<br><small>{html.escape(instructions)}</small>" if instructions else "")
            )
            self.content.value = self._render(cur)
        value = self.value
        for key, b in self.label_buttons.items():
            chosen = (
                key == value if self.kind in ("classification", "rating")
                else isinstance(value, list) and key in value if self.kind == "multilabel"
                else False
            )
            b.button_style = "success" if chosen else ""
        if self.kind in ("spans", "boxes"):
            items = list(value or [])
            self.item_list.options = [
                (f"{i}: {it['label']} [{it['start']}:{it['end']}]" if self.kind == "spans"
                 else f"{i}: {it['label']} ({it['x']:g}, {it['y']:g}, {it['width']:g}x{it['height']:g})", i)
                for i, it in enumerate(items)
            ]
        if self.kind == "text":
            self.text_input.value = value if isinstance(value, str) else ""
        self.back_button.disabled = self.index == 0
        self.next_button.disabled = cur is None
        self.skip_button.disabled = cur is None
        if not keep_status:
            self.status.value = ""
