"""Validation and shaping of run inputs (params, tags, metric keys and values, names): pure, no I/O.

Everything here raises :class:`~tracker.exceptions.InvalidValue` with a message naming the
offending key and what to do, so a bad value fails at the call that passed it.
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from collections.abc import Mapping
from typing import Any

from tracker.exceptions import InvalidValue

MAX_KEY = 250
MAX_NAME = 200
MAX_PARAM_CHARS = 100_000  # serialised size of one param or tag value
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f]")


def check_key(key: object, what: str) -> str:
    """A metric, param or tag key: a non-empty string of at most 250 characters."""
    if key.__class__ is not str:
        if not isinstance(key, str):
            raise InvalidValue(
                f"A {what} key must be a string, not {type(key).__name__} ({key!r:.60}); "
                f"use a name such as 'loss' or 'optimizer.lr'."
            )
        key = str(key)
    if not key or key.strip() != key:
        raise InvalidValue(
            f"The {what} key {key!r} is empty or has leading/trailing spaces; use a name such "
            f"as 'loss'."
        )
    if len(key) > MAX_KEY:
        raise InvalidValue(
            f"The {what} key {key[:40]!r}... has {len(key)} characters; the limit is {MAX_KEY}."
        )
    if _CONTROL.search(key):
        raise InvalidValue(f"The {what} key {key!r} contains control characters; remove them.")
    return key


def metric_value(key: str, value: object) -> float:
    """``value`` as a float, accepting ints, floats, NumPy scalars, Decimals and 0-d tensors.

    NaN and ±inf are valid metric values. Strings, None, booleans and arrays are not.
    """
    cls = value.__class__
    if cls is float:
        return value  # type: ignore[return-value]
    if cls is int:
        try:
            return float(value)  # type: ignore[arg-type]
        except OverflowError:
            raise _too_big(key, value) from None
    problem = None
    if value is None:
        problem = "None"
    elif isinstance(value, bool) or _is_numpy_bool(value):
        problem = "a boolean"
    elif isinstance(value, (str, bytes)):
        problem = f"the {type(value).__name__} {value!r:.40}"
    if problem is None:
        if isinstance(value, numbers.Real):
            try:
                return float(value)
            except OverflowError:
                raise _too_big(key, value) from None
        if hasattr(value, "__float__"):
            try:
                return float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                problem = f"a {type(value).__name__} that is not a single number"
        else:
            problem = f"a {type(value).__name__}"
    raise InvalidValue(
        f"Metric {key!r} got {problem}; metric values must be numbers (int, float, a NumPy "
        f"scalar or a one-element tensor; NaN and inf are allowed). Log text as a tag or param."
    )


def _too_big(key: str, value: object) -> InvalidValue:
    return InvalidValue(
        f"Metric {key!r} got a number too large for a float ({str(value)[:20]}..., beyond "
        f"1.8e308); log it as float('inf') or scaled down, for example as its logarithm."
    )


def _is_numpy_bool(value: object) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.bool_)


def metric_step(key: str, step: object) -> int:
    """A step: an integer (NumPy integers too) within int64."""
    if step.__class__ is not int:
        if isinstance(step, bool) or _is_numpy_bool(step) or not isinstance(step, numbers.Integral):
            raise InvalidValue(
                f"Metric {key!r} got step {step!r:.40} ({type(step).__name__}); a step must be "
                f"an integer such as the epoch or batch number, or None for the next step."
            )
        step = int(step)  # type: ignore[call-overload]
    if not INT64_MIN <= step <= INT64_MAX:  # type: ignore[operator]
        raise InvalidValue(f"Metric {key!r} got step {step}, outside the 64-bit integer range.")
    return step  # type: ignore[return-value]


def json_value(value: Any, where: str) -> Any:
    """``value`` as plain JSON (NumPy scalars unwrapped, tuples to lists), or InvalidValue."""
    cls = value.__class__
    if value is None or cls in (str, bool, int):
        return value
    if cls is float:
        if not math.isfinite(value):
            raise InvalidValue(
                f"{where} is {value}, which JSON cannot hold; log it as a string (for example "
                f"'nan') or as a metric, which keeps NaN and inf."
            )
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return json_value(float(value), where)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.generic):
        return json_value(value.item(), where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidValue(f"{where} has a non-string key {k!r}; JSON keys are strings.")
            out[k] = json_value(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise InvalidValue(
        f"{where} is a {type(value).__name__} ({value!r:.60}), which is not a JSON value; "
        f"convert it first (str(path), list(array), float(x))."
    )


_SCALARS = frozenset({int, float, str, bool, type(None)})
# Keys that passed check_key (sweeps log the same keys run after run); bounded.
_KNOWN_KEYS: set[str] = set()


def flatten(mapping: object, what: str) -> dict[str, Any]:
    """Nested dicts flattened with dots: ``{"opt": {"lr": 0.1}}`` -> ``{"opt.lr": 0.1}``.

    Raises:
        InvalidValue: not a mapping, a bad key or value, or two spellings of one key
            (``{"opt": {"lr": 1}, "opt.lr": 2}``).
    """
    if not isinstance(mapping, Mapping):
        raise InvalidValue(
            f"{what.capitalize()}s must be given as a dict, not {type(mapping).__name__}; for "
            f"example {{'lr': 0.001, 'optimizer': {{'name': 'adam'}}}}."
        )
    out: dict[str, Any] = {}
    label = what.capitalize()

    def walk(prefix: str, m: Mapping) -> None:
        for k, v in m.items():
            if k.__class__ is not str and not isinstance(k, str):
                raise InvalidValue(
                    f"A {what} key must be a string, not {type(k).__name__} ({k!r:.40})."
                )
            full = prefix + k if prefix else k
            cls = v.__class__
            # Plain scalars first: the ABC check behind isinstance(v, Mapping) is slow.
            if cls not in _SCALARS and isinstance(v, Mapping) and v:
                walk(full + ".", v)
                continue
            if full not in _KNOWN_KEYS:
                full = check_key(full, what)
                if len(_KNOWN_KEYS) > 50_000:
                    _KNOWN_KEYS.clear()
                _KNOWN_KEYS.add(full)
            if cls is int or cls is bool or v is None or cls is float and math.isfinite(v):
                value = v  # the common case, already plain JSON
            elif cls is str:
                value = v
                if len(v) > MAX_PARAM_CHARS:
                    raise InvalidValue(
                        f"{label} {full!r} is longer than {MAX_PARAM_CHARS} characters; log "
                        f"large values as an artifact."
                    )
            else:
                value = json_value(v, f"{label} {full!r}")
                if cls is not float and len(repr(value)) > MAX_PARAM_CHARS:
                    raise InvalidValue(
                        f"{label} {full!r} is larger than {MAX_PARAM_CHARS} characters; log "
                        f"large values as an artifact."
                    )
            if full in out:
                raise InvalidValue(
                    f"{label} {full!r} is given twice (once nested, once with dots); give it once."
                )
            out[full] = value

    walk("", mapping)
    return out


def check_name(name: object, what: str = "run name", *, max_len: int = MAX_NAME) -> str:
    if name is None:
        return ""
    if not isinstance(name, str):
        raise InvalidValue(f"A {what} must be a string, not {type(name).__name__}.")
    if len(name) > max_len:
        raise InvalidValue(f"A {what} has at most {max_len} characters; got {len(name)}.")
    return name.strip()


def same_json(a: Any, b: Any) -> bool:
    """Equality for logged values that does not confuse True with 1 or 1 with '1'."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return a == b
