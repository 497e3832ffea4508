"""Live signatures → the OpenAPI 3.0.2 document Cog publishes, and the input specs.

Cog writes ``openapi_schema.json`` at build time with a static parser; coglet
only reads it, and without it serves no schema and validates nothing.
minicog builds the same document from the loaded predictor at start-up (in
the worker, which sends it to the parent with ``ready``), from the function's
signature and ``typing.get_type_hints(include_extras=True)``.

The layout is Cog's, key for key (cog-behaviour.md section 9):

* ``components.schemas`` in the order ``Input``, ``Output``, one enumeration
  component per ``choices`` input (named after the parameter),
  ``PredictionRequest``, ``PredictionResponse``, ``Status``,
  ``HTTPValidationError``, ``ValidationError``; training uses ``TrainingInput``
  / ``TrainingOutput`` / ``TrainingRequest`` / ``TrainingResponse`` and the
  ``/trainings`` paths.  With both, the two documents are merged (predict
  wins; an enumeration whose name clashes with a *different* predict one is
  renamed ``Training_<name>`` so each route still validates against its own).
* Input properties in parameter order with keys ``x-order``, ``title``
  (``api_key`` → ``Api Key``), the type fragment, ``default``, ``nullable``,
  ``description``, ``minimum``, ``maximum``, ``minLength``, ``maxLength``,
  ``pattern``, ``deprecated``, ``x-cog-accept``.

Type fragments: ``str``/``int``/``float``/``bool`` → ``string``/``integer``/
``number``/``boolean``; ``Path``/``File`` → ``string`` + ``format: uri``;
``Secret`` → a ``password`` string with ``x-cog-secret``; ``Any``, ``dict``,
``TypedDict`` and ``Annotated[T, Opaque]`` → ``object``; ``list[T]`` →
``array`` of ``T`` (``Annotated[list[T], Opaque]`` → an array of objects, as
Cog keeps an opaque type's list/optional shape); ``Optional[T]`` → ``T`` +
``nullable`` and, without a default, optional (the validator passes ``None``
when it is omitted, coglet's rule); other unions of JSON-native types →
``anyOf``.  An input annotation outside this set raises
:class:`~minicog.errors.SchemaError` naming the parameter and the type, at
start-up rather than at the first request.

Where minicog differs from Cog's generator, on purpose (section 18): an input
whose default is ``None`` is optional and nullable with ``"default": null``
whatever its annotation (Cog makes ``seed: int = Input(default=None)``
*required*).  Output annotations are described the same way, plus iterators
(``x-cog-array-type: iterator``, ``ConcatenateIterator`` →
``x-cog-array-display: concatenate``), ``BaseModel``/dataclass/pydantic
model outputs (objects with titled properties), ``TypedDict`` outputs
(properties, ``required`` from its required keys) and ``dict[str, V]``
(``additionalProperties``); an output type minicog cannot describe is
published as ``{"title": "Output"}`` (any value) with a warning, because
outputs are never validated and such a model still works.

:func:`describe_inputs` returns the per-parameter :class:`InputSpec` list that
both the schema and the worker's input preparation (file downloads, Secret
wrapping, defaults) use, so the two can never disagree.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import enum
import inspect
import logging
import os
import pathlib
import types
import typing
from typing import Any, Callable, Optional

from ._version import COG_VERSION
from .errors import SchemaError
from .sdk.inputs import MISSING, FieldInfo
from .sdk.types import AsyncConcatenateIterator, ConcatenateIterator, File, Opaque, Path, Secret, URLFile, URLPath

__all__ = ["InputSpec", "describe_inputs", "build_schema", "output_schema", "title_case", "OPENAPI_VERSION"]

log = logging.getLogger("minicog.schema")

OPENAPI_VERSION = "3.0.2"
_REF = "#/components/schemas/"
_NONE = type(None)

_SECRET_FRAGMENT = {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True}
_URI_FRAGMENT = {"type": "string", "format": "uri"}
_PRIMITIVES = {str: "string", int: "integer", float: "number", bool: "boolean"}
_PATH_TYPES = (Path, URLPath, pathlib.Path, pathlib.PurePath)
_FILE_TYPES = (File, URLFile)
_RESERVED_COMPONENTS = frozenset({
    "Input", "Output", "PredictionRequest", "PredictionResponse", "Status", "HTTPValidationError", "ValidationError",
    "TrainingInput", "TrainingOutput", "TrainingRequest", "TrainingResponse"})
_ITERATOR_ORIGINS = (collections.abc.Iterator, collections.abc.Generator, collections.abc.Iterable,
                     collections.abc.AsyncIterator, collections.abc.AsyncGenerator, collections.abc.AsyncIterable)


def title_case(name: str) -> str:
    """Cog's titles: split on ``_``, upper-case each part's first letter, join with spaces."""
    return " ".join(part[:1].upper() + part[1:] for part in name.split("_"))


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One run()/predict()/train() parameter as the schema and the worker see it."""

    name: str
    #: The annotation from ``get_type_hints`` (``Annotated`` kept).
    annotation: Any
    #: The ``Input()`` metadata (built from a plain default when there is no ``Input()``).
    field: FieldInfo
    #: The property exactly as published under ``Input.properties``.
    fragment: dict
    #: ``"path"`` for ``Path`` (and lists/optionals of it), ``"file"`` for ``File``, else None.
    file_kind: Optional[str] = None
    is_list: bool = False
    #: A ``Secret`` or ``Optional[Secret]`` (string values get wrapped); not ``list[Secret]``.
    is_secret: bool = False
    nullable: bool = False
    required: bool = True
    order: int = 0
    #: The enumeration component for ``choices`` inputs: ``(name, schema)``; else None.
    enum_component: Optional[tuple] = None

    @property
    def default(self) -> Any:
        """The Python default, or :data:`~minicog.sdk.MISSING` when there is none (a bare
        ``Optional[T]`` has none yet is not required: omitted, it arrives as None)."""
        return self.field.default


@dataclasses.dataclass
class _Kind:
    """What a type fragment means for the worker (collected while describing a type)."""

    file_kind: Optional[str] = None
    is_list: bool = False
    is_secret: bool = False
    nullable: bool = False


def _subclass(tp: Any, classes: Any) -> bool:
    """issubclass() that is False for non-classes (on 3.10 ``list[int]`` claims to be a type)."""
    if not isinstance(tp, type) or typing.get_origin(tp) is not None:
        return False
    try:
        return issubclass(tp, classes)
    except TypeError:
        return False


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return tp.__qualname__ if tp.__module__ in ("builtins", None) else f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp).replace("typing.", "")


def _split_optional(tp: Any) -> tuple[Any, bool, list]:
    """``Optional[X]``/``X | None`` → (X or Union-args list, nullable, args)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is getattr(types, "UnionType")):
        args = list(typing.get_args(tp))
        nullable = _NONE in args
        args = [a for a in args if a is not _NONE]
        return (args[0] if len(args) == 1 else None), nullable, args
    return tp, False, [tp]


def _is_opaque(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Annotated and any(m is Opaque for m in tp.__metadata__)


def _opaque_fragment(tp: Any) -> tuple[dict, bool]:
    """``Annotated[T, Opaque]`` → (fragment, nullable); the shape of T survives.

    Cog keeps the list and optional wrappers of an opaque type: ``list[X]``
    becomes an array of objects, ``Optional[X]`` a nullable object, anything
    else one object.
    """
    inner = typing.get_args(tp)[0]
    base, nullable, args = _split_optional(inner)
    if base is None:  # a union of several types: one opaque value
        base = inner
    if base is list or typing.get_origin(base) in (list, collections.abc.Sequence):
        return {"type": "array", "items": {"type": "object"}}, nullable
    return {"type": "object"}, nullable


def _unannotate(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated and not _is_opaque(tp):
        tp = typing.get_args(tp)[0]
    return tp


def _is_typeddict(tp: Any) -> bool:
    check = getattr(typing, "is_typeddict", None)
    return bool(check and check(tp))


class _Unsupported(Exception):
    """Raised inside the describers; turned into SchemaError with the parameter name."""

    def __init__(self, tp: Any, why: str = ""):
        super().__init__(tp, why)
        self.tp, self.why = tp, why


def _input_fragment(tp: Any, kind: _Kind, *, top: bool = True) -> dict:
    """JSON fragment of an input type; *kind* records files/secrets/lists for the worker."""
    tp = _unannotate(tp)
    if _is_opaque(tp):
        fragment, nullable = _opaque_fragment(tp)
        if nullable:
            if top:
                kind.nullable = True  # published on the property, next to default/title
            else:
                fragment["nullable"] = True
        return fragment
    if tp is typing.Any or tp is dict or typing.get_origin(tp) in (dict, collections.abc.Mapping) or _is_typeddict(tp):
        return {"type": "object"}
    if tp in _PRIMITIVES:
        return {"type": _PRIMITIVES[tp]}
    if _subclass(tp, _PATH_TYPES):
        kind.file_kind = "path"
        return dict(_URI_FRAGMENT)
    if _subclass(tp, _FILE_TYPES):
        kind.file_kind = "file"
        return dict(_URI_FRAGMENT)
    if _subclass(tp, Secret):
        if top:
            kind.is_secret = True
        return dict(_SECRET_FRAGMENT)
    origin = typing.get_origin(tp)
    if tp is list or origin in (list, collections.abc.Sequence):
        if not top:
            # Cog coerces files only one level deep (list[Path]); say so instead of
            # publishing a schema the worker would not honour.
            inner_kind = _Kind()
            args = typing.get_args(tp)
            items = _input_fragment(args[0], inner_kind, top=False) if args else {}
            if inner_kind.file_kind:
                raise _Unsupported(tp, "files are supported in list[Path]/list[File] only, not deeper")
            return {"type": "array", "items": items}
        kind.is_list = True
        args = typing.get_args(tp)
        items = _input_fragment(args[0], kind, top=False) if args else {}
        return {"type": "array", "items": items}
    inner, nullable, args = _split_optional(tp)
    if args != [tp]:  # a union
        if not top:
            inner_kind = _Kind()
        else:
            inner_kind = kind
        if inner is not None:
            fragment = _input_fragment(inner, inner_kind, top=top)
            if nullable:
                if top:
                    kind.nullable = True  # published on the property, next to default/title
                else:
                    fragment = {**fragment, "nullable": True}
            return fragment
        variants = []
        for arg in args:
            probe = _Kind()
            fragment = _input_fragment(arg, probe, top=False)
            if probe.file_kind or _subclass(_unannotate(arg), Secret):
                raise _Unsupported(tp, "unions may only combine JSON types (str, int, float, bool, list, dict)")
            if nullable:
                fragment = {**fragment, "nullable": True}
            variants.append(fragment)
        if nullable and top:
            kind.nullable = True
        return {"anyOf": variants}
    raise _Unsupported(tp)


def _json_default(value: Any, name: str) -> Any:
    """A default as JSON (Path → str, Enum → value, tuple → list); SchemaError if impossible."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Secret):
        return "**********" if value.secret_value is not None else None  # never publish a secret
    if isinstance(value, enum.Enum):
        return _json_default(value.value, name)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_json_default(v, name) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_default(v, name) for k, v in value.items()}
    raise SchemaError(f"input {name!r}: default {value!r} ({type(value).__name__}) cannot be written as JSON; "
                      "use a str, int, float, bool, list or dict default")


def _type_hints(fn: Callable[..., Any], what: str) -> dict:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # NameError for forward references, TypeError for bad annotations
        raise SchemaError(f"cannot read the type annotations of {what}: {type(exc).__name__}: {exc}") from exc


def _describe_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def describe_inputs(fn: Callable[..., Any]) -> list[InputSpec]:
    """The inputs of *fn* (a bound method or a function), in parameter order.

    Raises :class:`~minicog.errors.SchemaError` for a parameter without annotation,
    an annotation minicog cannot describe, positional-only parameters, or ``choices``
    that do not fit the annotation.  ``*args``/``**kwargs`` are not inputs and are
    skipped (unknown input keys are dropped before the call anyway).
    """
    what = f"{_describe_name(fn)}()"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"cannot read the signature of {what}: {exc}") from exc
    hints = _type_hints(fn, what)
    specs: list[InputSpec] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        name = param.name
        if param.kind is param.POSITIONAL_ONLY:
            raise SchemaError(f"input {name!r} of {what} is positional-only; inputs are passed by keyword")
        if name not in hints:
            raise SchemaError(f"input {name!r} of {what} has no type annotation; annotate it, e.g. {name}: str = Input(...)")
        annotation = hints[name]
        default = param.default
        if isinstance(default, FieldInfo):
            field = default
        elif default is inspect.Parameter.empty:
            field = FieldInfo()
        else:
            field = FieldInfo(default=default)
        specs.append(_describe_one(name, annotation, field, len(specs), what))
    return specs


def _describe_one(name: str, annotation: Any, field: FieldInfo, order: int, what: str) -> InputSpec:
    kind = _Kind()
    try:
        fragment = _input_fragment(annotation, kind)
    except _Unsupported as exc:
        why = f" ({exc.why})" if exc.why else ""
        raise SchemaError(f"input {name!r} of {what} has type {_type_name(annotation)}, which minicog cannot use as an input"
                          f"{why}; supported: str, int, float, bool, Path, File, Secret, Any/dict, list[T], "
                          "Optional[T] and unions of JSON types") from None
    has_default = field.default is not MISSING
    # minicog: a None default makes any input optional and nullable (Cog would make it required).
    nullable = kind.nullable or (has_default and field.default is None)
    # Cog: a bare ``x: Optional[T]`` without a default is optional (the validator passes
    # None when it is omitted); a union of several types without a default stays required.
    required = not has_default and not (kind.nullable and "anyOf" not in fragment)

    prop: dict = {}
    enum_component = None
    if field.choices is not None:
        # The component is named after the parameter (Cog); a parameter called like one of
        # the fixed components (``Status``...) must not replace it.
        component = f"{name}Enum" if name in _RESERVED_COMPONENTS else name
        enum_component = (component, _enum_component(name, annotation, field.choices, fragment, what))
        prop["allOf"] = [{"$ref": _REF + component}]
        prop["x-order"] = order
    else:
        prop["x-order"] = order
        prop["title"] = title_case(name)
        prop.update(fragment)
    if has_default:
        prop["default"] = _json_default(field.default, name)
    if nullable:
        prop["nullable"] = True
    if field.description is not None:
        prop["description"] = field.description
    if field.choices is None:
        if field.ge is not None:
            prop["minimum"] = field.ge
        if field.le is not None:
            prop["maximum"] = field.le
        if field.min_length is not None:
            prop["minLength"] = field.min_length
        if field.max_length is not None:
            prop["maxLength"] = field.max_length
        if field.regex is not None:
            prop["pattern"] = field.regex
    if field.deprecated:
        prop["deprecated"] = True
    if field.accept is not None:
        prop["x-cog-accept"] = field.accept
    return InputSpec(name=name, annotation=annotation, field=field, fragment=prop, file_kind=kind.file_kind,
                     is_list=kind.is_list, is_secret=kind.is_secret, nullable=nullable, required=required,
                     order=order, enum_component=enum_component)


def _enum_component(name: str, annotation: Any, choices: Any, fragment: dict, what: str) -> dict:
    if not isinstance(choices, (list, tuple)) or not choices:
        raise SchemaError(f"input {name!r} of {what}: choices must be a non-empty list")
    json_type = fragment.get("type")
    if json_type not in ("string", "integer", "number") or fragment.get("format"):
        raise SchemaError(f"input {name!r} of {what}: choices need a str or int annotation, not {_type_name(annotation)}")
    tests = {"string": lambda c: isinstance(c, str),
             "integer": lambda c: isinstance(c, int) and not isinstance(c, bool),
             "number": lambda c: isinstance(c, (int, float)) and not isinstance(c, bool)}
    bad = [c for c in choices if not tests[json_type](c)]
    if bad:
        raise SchemaError(f"input {name!r} of {what}: choices {bad!r} do not match the annotation {_type_name(annotation)}")
    return {"title": name, "description": "An enumeration.", "enum": list(choices), "type": json_type}


# --- outputs ---------------------------------------------------------------------------


def _is_model_class(tp: Any) -> bool:
    return isinstance(tp, type) and typing.get_origin(tp) is None and dataclasses.is_dataclass(tp)


def _is_pydantic_model(tp: Any) -> bool:
    """A pydantic ``BaseModel`` subclass, recognised by duck typing (minicog never imports pydantic)."""
    if not isinstance(tp, type) or typing.get_origin(tp) is not None:
        return False
    fields = getattr(tp, "model_fields", None)
    if not isinstance(fields, dict):
        fields = getattr(tp, "__fields__", None)
    return isinstance(fields, dict) and callable(getattr(tp, "model_dump", None) or getattr(tp, "dict", None))


def _field_has_default(tp: Any, name: str) -> bool:
    """Whether field *name* of a dataclass/``cog.BaseModel`` or pydantic model has a default.

    Cog lists only fields without a default as ``required`` in an object output
    (``confidence: float = 0.0`` may be absent); pydantic is duck-typed: v2's
    ``FieldInfo.is_required()``, v1's ``ModelField.required``.
    """
    if _is_model_class(tp):
        for f in dataclasses.fields(tp):
            if f.name == name:
                return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        return False
    info = (getattr(tp, "model_fields", None) or getattr(tp, "__fields__", None) or {}).get(name)
    is_required = getattr(info, "is_required", None)
    if callable(is_required):
        return not is_required()
    required = getattr(info, "required", True)
    return required is False


def _typeddict_output(tp: Any, seen: tuple) -> dict:
    """A TypedDict output: its keys as properties; ``required`` from ``__required_keys__``."""
    if tp in seen:
        return {"type": "object"}
    try:
        hints = typing.get_type_hints(tp)  # drops Required/NotRequired (and Annotated) wrappers
    except Exception as exc:
        raise _Unsupported(tp, f"cannot read its annotations: {exc}") from None
    required_keys = getattr(tp, "__required_keys__", frozenset(hints))
    properties = {name: {**_output_fragment(annotation, seen + (tp,)), "title": title_case(name)}
                  for name, annotation in hints.items()}
    fragment: dict = {"type": "object", "properties": properties}
    required = [name for name in hints if name in required_keys]
    if required:
        fragment["required"] = required
    return fragment


def _output_fragment(tp: Any, seen: tuple = ()) -> dict:
    tp = _unannotate(tp)
    if _is_opaque(tp):
        fragment, nullable = _opaque_fragment(tp)
        return {**fragment, "nullable": True} if nullable else fragment
    if tp is typing.Any or tp is dict:
        return {"type": "object"}
    if _is_typeddict(tp):
        return _typeddict_output(tp, seen)
    if tp in _PRIMITIVES:
        return {"type": _PRIMITIVES[tp]}
    if _subclass(tp, _PATH_TYPES + _FILE_TYPES):
        return dict(_URI_FRAGMENT)
    if _subclass(tp, Secret):
        return dict(_SECRET_FRAGMENT)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (dict, collections.abc.Mapping):
        if len(args) == 2 and args[1] is not typing.Any:
            return {"type": "object", "additionalProperties": _output_fragment(args[1], seen)}
        return {"type": "object"}
    if tp is list or origin in (list, collections.abc.Sequence, tuple, set, frozenset):
        return {"type": "array", "items": _output_fragment(args[0], seen) if args and args[0] is not Ellipsis else {}}
    concat = _subclass(tp, (ConcatenateIterator, AsyncConcatenateIterator)) or (
        _subclass(origin, (ConcatenateIterator, AsyncConcatenateIterator)))
    if concat or origin in _ITERATOR_ORIGINS or tp in _ITERATOR_ORIGINS or tp in (typing.Iterator, typing.AsyncIterator, typing.Generator, typing.AsyncGenerator):
        fragment = {"type": "array", "items": _output_fragment(args[0], seen) if args else {}, "x-cog-array-type": "iterator"}
        if concat:
            fragment["x-cog-array-display"] = "concatenate"
        return fragment
    if _is_model_class(tp) or _is_pydantic_model(tp):
        if tp in seen:
            return {"type": "object"}  # a recursive model: stop describing here
        try:
            hints = typing.get_type_hints(tp, include_extras=True)
        except Exception as exc:
            raise _Unsupported(tp, f"cannot read its annotations: {exc}") from None
        if _is_model_class(tp):
            names = [f.name for f in dataclasses.fields(tp)]
        else:  # pydantic v2 ``model_fields`` / v1 ``__fields__``, in declaration order
            names = list(getattr(tp, "model_fields", None) or getattr(tp, "__fields__", None) or {})
        properties: dict = {}
        required: list = []
        for name in names:
            annotation = hints.get(name, typing.Any)
            properties[name] = {**_output_fragment(annotation, seen + (tp,)), "title": title_case(name)}
            if (not _split_optional(annotation)[1] and not properties[name].get("nullable")
                    and not _field_has_default(tp, name)):
                required.append(name)
        fragment = {"type": "object", "properties": properties}
        if required:
            fragment["required"] = required
        return fragment
    inner, nullable, union_args = _split_optional(tp)
    if union_args != [tp]:
        if inner is not None:
            fragment = _output_fragment(inner, seen)
            return {**fragment, "nullable": True} if nullable else fragment
        variants = [_output_fragment(a, seen) for a in union_args]
        if nullable:
            variants = [{**v, "nullable": True} for v in variants]
        return {"anyOf": variants}
    raise _Unsupported(tp)


def output_schema(fn: Callable[..., Any], title: str = "Output") -> dict:
    """The ``Output`` component for *fn*'s return annotation."""
    what = f"{_describe_name(fn)}()"
    hints = _type_hints(fn, what)
    if "return" not in hints or hints["return"] is _NONE:
        return {"title": title}
    try:
        return {"title": title, **_output_fragment(hints["return"])}
    except _Unsupported as exc:
        log.warning("The return type %s of %s cannot be described in the schema%s; publishing it as any value",
                    _type_name(hints["return"]), what, f" ({exc.why})" if exc.why else "")
        return {"title": title}


# --- the document ------------------------------------------------------------------------


def _input_component(specs: list[InputSpec], title: str) -> dict:
    component: dict = {"title": title, "type": "object", "properties": {s.name: s.fragment for s in specs}}
    required = [s.name for s in specs if s.required]
    if required:
        component["required"] = required
    return component


def _request_response(kind: str, input_name: str, output_name: str) -> dict:
    request = {"properties": {"id": {"title": "Id", "type": "string"},
                              "input": {"$ref": _REF + input_name}},
               "title": f"{kind}Request", "type": "object"}
    dt = {"format": "date-time", "type": "string"}
    response = {"properties": {
        "completed_at": {**dt, "title": "Completed At"},
        "created_at": {**dt, "title": "Created At"},
        "error": {"title": "Error", "type": "string"},
        "id": {"title": "Id", "type": "string"},
        "input": {"$ref": _REF + input_name},
        "logs": {"title": "Logs", "type": "string"},
        "metrics": {"title": "Metrics", "type": "object"},
        "output": {"$ref": _REF + output_name},
        "started_at": {**dt, "title": "Started At"},
        "status": {"title": "Status", "type": "string"},
        "version": {"title": "Version", "type": "string"},
    }, "title": f"{kind}Response", "type": "object"}
    return {f"{kind}Request": request, f"{kind}Response": response}


def _common_components() -> dict:
    return {
        "Status": {"description": "An enumeration.", "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
                   "title": "Status", "type": "string"},
        "HTTPValidationError": {"properties": {"detail": {"items": {"$ref": _REF + "ValidationError"}, "title": "Detail", "type": "array"}},
                                "title": "HTTPValidationError", "type": "object"},
        "ValidationError": {"properties": {
            "loc": {"items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}, "title": "Location", "type": "array"},
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"}},
            "required": ["loc", "msg", "type"], "title": "ValidationError", "type": "object"},
    }


def _json_response(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}, "description": "Successful Response"}


_VALIDATION_RESPONSE = {"content": {"application/json": {"schema": {"$ref": _REF + "HTTPValidationError"}}},
                        "description": "Validation Error"}


def _common_paths() -> dict:
    return {
        "/": {"get": {"operationId": "root__get", "responses": {"200": _json_response({})}, "summary": "Root"}},
        "/health-check": {"get": {"operationId": "healthcheck_health_check_get", "responses": {"200": _json_response({})},
                                  "summary": "Healthcheck"}},
    }


def _run_paths(collection: str, id_name: str, kind: str, summary: str, description: str, operation: str, streaming: bool) -> dict:
    post = {
        "description": description,
        "operationId": f"{operation}_{collection}_post",
        "requestBody": {"content": {"application/json": {"schema": {"$ref": f"{_REF}{kind}Request"}}}},
        "responses": {"200": {"content": {"application/json": {"schema": {"$ref": f"{_REF}{kind}Response"}}},
                              "description": "Successful Response"},
                      "422": _VALIDATION_RESPONSE},
        "summary": summary,
    }
    if streaming:
        post["x-cog-streaming"] = True
    cancel = {"post": {
        "operationId": f"cancel_{collection}__{id_name}__cancel_post",
        "parameters": [{"in": "path", "name": id_name, "required": True, "schema": {"title": title_case(id_name), "type": "string"}}],
        "responses": {"200": _json_response({}), "422": _VALIDATION_RESPONSE},
        "summary": "Cancel",
    }}
    return {f"/{collection}": {"post": post}, f"/{collection}/{{{id_name}}}/cancel": cancel}


def _is_streaming(loaded: Any) -> bool:
    return bool(getattr(loaded, "streaming", False) or getattr(getattr(loaded, "fn", None), "__cog_streaming__", False))


def _half(loaded: Any, *, train: bool) -> tuple[dict, dict]:
    """(components, paths) for one side: predict (``Input`` ...) or train (``TrainingInput`` ...)."""
    fn = loaded.fn
    specs = describe_inputs(fn)
    kind = "Training" if train else "Prediction"
    input_name = "TrainingInput" if train else "Input"
    output_name = "TrainingOutput" if train else "Output"
    components: dict = {input_name: _input_component(specs, input_name), output_name: output_schema(fn, output_name)}
    for spec in specs:
        if spec.enum_component:
            components[spec.enum_component[0]] = spec.enum_component[1]
    components.update(_request_response(kind, input_name, output_name))
    components.update(_common_components())
    if train:
        paths = _run_paths("trainings", "training_id", kind, "Train", "Run a single training on the model", "train", _is_streaming(loaded))
    else:
        paths = _run_paths("predictions", "prediction_id", kind, "Predict", "Run a single prediction on the model", "predict", _is_streaming(loaded))
    return components, paths


def _merge(predict: dict, train: dict) -> dict:
    """Add the training components to the predict ones; predict wins, clashing enums are renamed."""
    merged = dict(predict)
    train = copy.deepcopy(train)  # its TrainingInput may be edited below
    renames: dict[str, str] = {}
    for name, schema in train.items():
        if name not in merged:
            merged[name] = schema
        elif merged[name] != schema and name not in ("Status", "HTTPValidationError", "ValidationError"):
            new = f"Training_{name}"
            renames[_REF + name] = _REF + new
            merged[new] = schema
    if renames:
        props = merged["TrainingInput"].get("properties", {})
        for prop in props.values():
            for ref in prop.get("allOf", ()):
                if ref.get("$ref") in renames:
                    ref["$ref"] = renames[ref["$ref"]]
    return merged


def build_schema(predict: Any = None, train: Any = None) -> dict:
    """The OpenAPI document for a predictor (and/or trainer).

    *predict* and *train* are :class:`~minicog.loader.LoadedPredictor` objects (anything
    with ``fn`` and ``streaming``) or None.  The result is plain JSON (dicts, lists,
    str, numbers, bools, None).
    """
    components: dict = {}
    paths = _common_paths()
    if predict is not None:
        c, p = _half(predict, train=False)
        components.update(c)
        paths.update(p)
    if train is not None:
        c, p = _half(train, train=True)
        components = _merge(components, c) if components else c
        paths.update(p)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Cog", "version": COG_VERSION},
        "paths": paths,
        "components": {"schemas": components},
    }
