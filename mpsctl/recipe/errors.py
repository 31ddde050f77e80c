"""Turn pydantic validation errors into one-line, path-first recipe problems.

Every problem reads ``<path>: <what is wrong> (<allowed values or fix>)``; several problems
are joined with ``"; "`` so the CLI can print the whole verdict on a single line.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from mpsctl.errors import RecipeError
from mpsctl.registry import closest

#: pydantic error type of the problems raised by the schema's own validators; their ``ctx``
#: holds ``problems``: a list of ``(sub_location, text)`` pairs relative to the error's loc.
PROBLEMS = "recipe_problems"

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def format_path(loc: Iterable[str | int]) -> str:
    """Render a location as ``search.layers["conv.*"].weight_bits[2]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f'["{part}"]'
    return text


def show(value: Any) -> str:
    """A short, YAML-flavoured rendering of a bad value for an error message."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def problems_error(problems: Sequence[str]) -> RecipeError:
    """A RecipeError whose message is every problem on one line (``.problems`` keeps the list)."""
    error = RecipeError("; ".join(problems))
    error.problems = list(problems)
    return error


def describe_errors(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One ``path: problem (fix)`` string per error in ``exc``, validated against ``root``."""
    lines: list[str] = []
    listed: set[tuple[str | int, ...]] = set()  # sections whose allowed keys were shown
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        if error["type"] == PROBLEMS:
            for sub, text in error["ctx"]["problems"]:
                lines.append(_line(loc + tuple(sub), text))
        elif error["type"] == "extra_forbidden":
            lines.append(_line(loc, _unknown_key(loc, root, loc[:-1] not in listed)))
            listed.add(loc[:-1])
        else:
            lines.append(_line(loc, _translate(error)))
    return lines


def _line(loc: tuple[str | int, ...], text: str) -> str:
    path = format_path(loc)
    return f"{path}: {text}" if path else text


_TYPE_TEXT = {
    "int_type": "{value} is not an integer (give a whole number)",
    "int_parsing": "{value} is not an integer (give a whole number)",
    "int_from_float": "{value} is not an integer (give a whole number)",
    "float_type": "{value} is not a number (e.g. 0.001)",
    "float_parsing": "{value} is not a number (e.g. 0.001)",
    "bool_type": "{value} is not a boolean (true, false)",
    "bool_parsing": "{value} is not a boolean (true, false)",
    "string_type": "{value} is not text (quote it)",
    "list_type": "{value} is not a list (write it as [a, b, ...])",
    "dict_type": "{value} is not a mapping (write key: value pairs)",
    "model_type": "{value} is not a mapping (write key: value pairs)",
    "model_attributes_type": "{value} is not a mapping (write key: value pairs)",
    "missing": "required key is missing (add it)",
    "greater_than": "{value} is too small (must be > {gt})",
    "greater_than_equal": "{value} is too small (must be >= {ge})",
    "less_than": "{value} is too large (must be < {lt})",
    "less_than_equal": "{value} is too large (must be <= {le})",
}


def _translate(error: dict[str, Any]) -> str:
    kind = error["type"]
    value = show(error.get("input"))
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        allowed = ctx["expected"].replace(" or ", ", ").replace("'", "")
        return f"{value} is not allowed ({allowed})"
    template = _TYPE_TEXT.get(kind)
    if template is not None:
        return template.format(value=value, **{key: _number(bound) for key, bound in ctx.items()})
    message = error["msg"]
    return f"{message[:1].lower()}{message[1:]} (got {value})"


def _number(bound: Any) -> Any:
    """``0`` rather than ``0.0`` for a float bound that is a whole number."""
    return int(bound) if isinstance(bound, float) and bound.is_integer() else bound


def _unknown_key(loc: Sequence[str | int], root: type[BaseModel], list_allowed: bool) -> str:
    """Suggest the closest field; otherwise list the allowed keys (once per section)."""
    key = str(loc[-1])
    fields = _fields_at(root, loc[:-1])
    guess = closest(key, fields)
    if guess is not None:
        return f"unknown key (did you mean '{guess}'?)"
    if fields and list_allowed:
        return f"unknown key (allowed: {', '.join(fields)})"
    return "unknown key (remove it)"


def _fields_at(root: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names of the model found by following ``loc`` through ``root``'s annotations."""
    annotation: Any = root
    for part in loc:
        annotation = _unwrap(annotation)
        if _is_model(annotation):
            field = annotation.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) in (dict, list):
            annotation = get_args(annotation)[-1]
        else:
            return []
    annotation = _unwrap(annotation)
    return list(annotation.model_fields) if _is_model(annotation) else []


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` wrappers down to the type that holds the fields."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            annotation = members[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
