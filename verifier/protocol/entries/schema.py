"""The JSON Schema (draft 2020-12) of each entry kind, checked fast and explained clearly.

Schemas are package resources of verifier.protocol.entries (copies of schema/*.json), read
with importlib.resources and compiled once. Two validators run on the same schema:
fastjsonschema decides (compiled to Python, ~20x faster on valid entries), and only when it
refuses does jsonschema look for the clearest reason. Both give ``pattern`` ECMA-262's
``$`` (end of input), as JSON Schema requires. Refusals raise EntryError("invalid_entry").
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import fastjsonschema
import jsonschema

from verifier.protocol.entries.errors import INVALID_ENTRY, EntryError, short
from verifier.protocol.entries.strict_json import child_path

__all__ = ["MAX_MESSAGE", "check_schema", "fast_validator", "load_schema", "validator"]

MAX_MESSAGE = 300


@functools.cache
def _compile_pattern(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    """The ``pattern`` keyword with ECMA-262's ``$``, which only matches at the very end.

    Python's ``$`` also matches before a final newline, which would let "1.0\\n" through.
    """
    if validator.is_type(instance, "string") and not _compile_pattern(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def load_schema(name: str) -> Any:
    """The schema resource `name` of this package, parsed (and cached: do not modify it)."""
    resource = importlib.resources.files("verifier.protocol.entries").joinpath(name)
    return json.loads(resource.read_text(encoding="utf-8"))


@functools.cache
def fast_validator(name: str) -> Any:
    """The schema compiled to Python code: ~20x faster than jsonschema on valid entries.

    fastjsonschema gives ``$`` ECMA-262's meaning (end of input) too. Only when it refuses
    an entry does jsonschema run, to find the clearest reason.
    """
    return fastjsonschema.compile(load_schema(name))


@functools.cache
def validator(name: str) -> Any:
    """The jsonschema validator of schema `name`, to explain refusals."""
    schema = load_schema(name)
    base = jsonschema.Draft202012Validator
    base.check_schema(schema)
    cls = jsonschema.validators.extend(base, {"pattern": _ecma_pattern})
    return cls(schema)


def _format_path(path: Iterable[Any]) -> str:
    where = ""
    for key in path:
        where = child_path(where, key)
    return where or "entry"


def _explain(error: Any) -> str:
    """A one-line reason for a jsonschema error, without dumping huge instances."""
    kind, limit, schema = error.validator, error.validator_value, error.schema
    if kind == "pattern" and isinstance(schema, dict) and "description" in schema:
        return f"{short(error.instance)} is not {schema['description']}"
    messages = {
        "maxItems": f"must have at most {limit} items",
        "minItems": f"must have at least {limit} item(s)",
        "maxLength": f"must be at most {limit} characters",
        "minLength": f"must be at least {limit} character(s)",
        "type": f"{short(error.instance)} is not of type {limit!r}",
    }
    return str(messages.get(kind, error.message))


def check_schema(obj: Any, name: str) -> None:
    """EntryError("invalid_entry"), naming the member at fault, unless `obj` fits schema
    `name`."""
    try:
        fast_validator(name)(obj)
        return
    except fastjsonschema.JsonSchemaException as exc:
        fast_reason = str(exc)
    error = jsonschema.exceptions.best_match(validator(name).iter_errors(obj))
    if error is None:  # the two validators disagree: refusing is the safe side
        raise EntryError(INVALID_ENTRY, fast_reason[:MAX_MESSAGE])
    message = f"{_format_path(error.absolute_path)}: {_explain(error)}"
    raise EntryError(INVALID_ENTRY, message[:MAX_MESSAGE])
