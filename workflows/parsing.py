"""Checks for JSON that enters Tollgate from outside. Standard library only.

Every workflow input, signal argument, form field holding JSON and query
preview goes through these before anything else touches it, so a wrong value
ends in an ``InputError`` that names the field, in the caller's words (JSON
types: string, number, array, object, null), instead of a conversion failure,
a ``RecursionError`` or a database overflow that would retry forever.

The limits are Tollgate's, written once here:
- nesting: at most ``MAX_DEPTH`` levels of arrays and objects. Business
  details are a few levels deep; every layer that copies a value (the
  workflow sandbox, ``dataclasses.asdict``, the JSON encoder) recurses, and
  about 500 levels already overflowed Python's stack in a workflow task.
- numbers: finite, and whole numbers within JSON's interoperable range
  (``MAX_SAFE_INTEGER``, what every JavaScript or JSON client reads back
  unchanged); a field with a narrower meaning checks its own range.
- size: ``check_json`` counts the nodes it walks (``MAX_NODES``), so a huge
  value is refused before it is copied into a workflow history.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

MAX_TEXT = 10_000
MAX_DEPTH = 32
MAX_NODES = 10_000
MAX_SAFE_INTEGER = 2**53 - 1


class InputError(ValueError):
    """A field of a JSON value from a client is missing, of the wrong type or out of range."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _key(key: str) -> str:
    """A key as a message shows it: as typed, or quoted as JSON when it is empty, blank, holds
    characters that do not print, or is long, so the field is always named and readable."""
    if key.strip() and key.isprintable() and len(key) <= 100:
        return key
    return json.dumps(key[:100], ensure_ascii=True) + ("..." if len(key) > 100 else "")


def check_json(value: Any, name: str, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
    """Refuse a decoded JSON value nested deeper than ``max_depth``, with more than ``max_nodes``
    values, with a number out of range, NUL characters or non-string keys. Iterative, so no
    input can exhaust the stack here; the error names the path (``payload.items[3].price``)."""
    stack: list[tuple[Any, str, int]] = [(value, name, 0)]
    nodes = 0
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise InputError(name, f"must hold at most {max_nodes} values")
        if isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                raise InputError(path, f"is nested too deeply (at most {max_depth} levels of arrays and objects)")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InputError(path, "must have string keys")
                    if "\x00" in key:
                        raise InputError(path, "must not contain NUL characters")
                    # The whole input's fields are named alone ("payload.note", not "input.payload.note").
                    stack.append((child, _key(key) if path == "input" else f"{path}.{_key(key)}", depth + 1))
            else:
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            if "\x00" in item:
                raise InputError(path, "must not contain NUL characters")
        elif isinstance(item, bool) or item is None:
            pass
        elif isinstance(item, int):
            if abs(item) > MAX_SAFE_INTEGER:
                raise InputError(path, f"must be between -{MAX_SAFE_INTEGER} and {MAX_SAFE_INTEGER}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InputError(path, "must be a finite number")
        else:
            raise InputError(path, f"must be a JSON value, got {type(item).__name__}")


def json_object(raw: Any, name: str = "input", *, max_nodes: int = MAX_NODES) -> dict[str, Any]:
    """``raw`` as a JSON object checked by ``check_json``."""
    if not isinstance(raw, dict):
        raise InputError(name, f"must be a JSON object, got {json_type(raw)}")
    check_json(raw, name, max_nodes=max_nodes)
    return raw


def known_keys(raw: dict[str, Any], allowed: Iterable[str], where: str = "input") -> None:
    """Refuse a key the contract does not define: a typo such as ``aprovers`` would otherwise be
    ignored silently and the request go to the default approvers."""
    allowed = list(allowed)
    for key in raw:
        if key not in allowed:
            prefix = f"{where}." if where != "input" else ""
            raise InputError(f"{prefix}{_key(key)}", f"is not a known field (known: {', '.join(allowed)})")


def string_field(raw: dict[str, Any], name: str, *, required: bool, max_length: int = MAX_TEXT) -> str:
    value = raw.get(name)
    if value is None:
        if required:
            raise InputError(name, "is required")
        return ""
    if not isinstance(value, str):
        raise InputError(name, f"must be a string, got {json_type(value)}")
    value = value.strip()
    if "\x00" in value:
        raise InputError(name, "must not contain NUL characters")
    if required and not value:
        raise InputError(name, "must not be empty")
    if len(value) > max_length:
        raise InputError(name, f"must be at most {max_length} characters")
    return value


def string_list(raw: dict[str, Any], name: str, prefix: str, *, max_items: int = 1000) -> list[str]:
    value = raw.get(name, [])
    where = f"{prefix}.{name}"
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(where, "must be an array of non-empty strings")
    if len(value) > max_items:
        raise InputError(where, f"must list at most {max_items} names")
    if any(len(v.strip()) > 150 or "\x00" in v for v in value):
        raise InputError(where, "must hold names of at most 150 characters")
    return sorted({v.strip() for v in value})


def whole_number(raw: dict[str, Any], name: str, *, default: int | None, minimum: int, maximum: int) -> int:
    value = raw.get(name, default)
    if value is None:
        raise InputError(name, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(name, f"must be a whole number from {minimum} to {maximum}, got {json_type(value)}")
    if not minimum <= value <= maximum:
        raise InputError(name, f"must be a whole number from {minimum} to {maximum}")
    return value


def _show(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def number(
    raw: dict[str, Any], name: str, *, default: float | None, minimum: float, maximum: float, positive: bool = False
) -> float:
    """A finite number within [minimum, maximum], or within (0, maximum] when ``positive``."""
    value = raw.get(name, default)
    if value is None:
        raise InputError(name, "is required")
    wanted = (
        f"a positive number, at most {_show(maximum)}"
        if positive
        else f"a number from {_show(minimum)} to {_show(maximum)}"
    )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(name, f"must be {wanted}, got {json_type(value)}")
    if not math.isfinite(value) or not minimum <= value <= maximum or (positive and value <= 0):
        raise InputError(name, f"must be {wanted}")
    return float(value)


def positive_number(raw: dict[str, Any], name: str, *, default: float | None = None, maximum: float) -> float:
    return number(raw, name, default=default, minimum=0, maximum=maximum, positive=True)


def flag(raw: dict[str, Any], name: str) -> bool:
    value = raw.get(name, False)
    if not isinstance(value, bool):
        raise InputError(name, f"must be true or false, got {json_type(value)}")
    return value


def json_value_from_text(text: str, name: str) -> Any:
    """Any JSON value typed by a person (a signal's input, say), checked by ``check_json``.
    Decoding errors, including nesting too deep for the decoder itself and whole numbers too long
    for Python to convert, become an ``InputError`` naming ``name``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(name, f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise InputError(name, f"is nested too deeply (at most {MAX_DEPTH} levels of arrays and objects)") from None
    except ValueError:  # Python's limit on the digits of a whole number (4,300): far beyond any JSON number's range
        raise InputError(name, f"holds a number with too many digits (at most {MAX_SAFE_INTEGER})") from None
    check_json(value, name)
    return value


def json_from_text(text: str, name: str) -> dict[str, Any]:
    """A JSON object typed by a person (a form field, a command-line option), checked like any
    input. Empty text is ``{}``."""
    text = text.strip()
    if not text:
        return {}
    return json_object(json_value_from_text(text, name), name)
