"""Validate a prediction's JSON input against the OpenAPI document, the way coglet does.

coglet validates ``input`` in the parent process before a slot is taken: it
strips keys the ``Input`` component does not declare, runs a JSON-Schema
validator over the rest, and turns every problem into one entry of the 422
``detail`` list (``{"loc": ["body", "input", <field>], "msg", "type"}``).  This
module does the same with the standard library only, and does better in one
documented way: ``nullable: true`` is honoured, so an explicit ``null`` for an
``Optional[...]`` input is accepted (coglet's validator ignores the OpenAPI
keyword and answers 422).

Only the JSON-Schema subset that :mod:`minicog.schema` (and Cog's generator)
emits is understood: ``type`` (``integer`` is distinct from ``number`` only in
that it needs a whole value, and booleans are never numbers), ``nullable``,
``enum``, ``allOf``/``anyOf``, ``$ref`` to ``#/components/schemas/<Name>``,
``items``, ``properties``/``required``/``additionalProperties``, ``minimum``/
``maximum``, ``minLength``/``maxLength`` (counted in characters, as the Rust
validator does), and ``pattern`` (an unanchored :func:`re.search`).  ``format``
is an annotation, never asserted, except ``uri``, which minicog's schema (and
Cog's) gives exactly the ``Path``/``File`` inputs: such a string must be an
``http(s)://`` or ``data:`` URL (:func:`minicog.files.file_input_problem`), so a
``file:///etc/passwd`` or a bare local path is a 422 naming the input and never
reaches the worker (Cog passes it to ``predict()`` as a path).
Unknown keywords are ignored, as any JSON-Schema validator does.

Messages are the Rust ``jsonschema`` crate's texts that coglet sends, with
values printed as compact JSON (``"3" is not of type "integer"``,
``11 is greater than the maximum of 10``, ``"blue" is not one of
["red","green"]``).  Nested problems carry a JSON-pointer-like location
without the leading slash (``"l/1"``).  Within one schema object the keywords
are checked in sorted order, which is the order coglet's validator reports
them in (so ``"1"`` for an integer enum gives "not one of" before "not of
type"); property problems come before missing-field entries.  Every problem is
reported at once, never just the first.

Design: validation runs on every request, so a schema is *compiled* once into
a tree of small closures (:class:`Validator`) and the compiled form is cached
per document object.  :func:`validate_input` is the simple entry point; the
cache holds the document itself so an ``id()`` can never be reused by another
object while its entry lives.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any, Callable, NamedTuple, Optional

__all__ = ["ValidationResult", "Validator", "validate_input", "redact_input", "REDACTED", "MISSING_TYPE",
           "VALUE_TYPE"]

log = logging.getLogger("minicog.validation")

#: ``type`` of a missing-required entry and of every other entry (Cog's strings).
MISSING_TYPE = "value_error.missing"
VALUE_TYPE = "value_error"

_REF_PREFIX = "#/components/schemas/"

#: What a secret input's value is replaced with wherever a prediction is echoed
#: (Cog's ``str(Secret(...))``).
REDACTED = "**********"

# A compiled check appends (path, message) pairs to *errors*; *path* is a tuple of
# property names / array indices leading to the value.
Check = Callable[[Any, tuple, list], None]


class ValidationResult(NamedTuple):
    """Outcome of :func:`validate_input`.

    ``value`` is the cleaned input (unknown keys dropped, ``None`` injected for
    nullable optional inputs that have no default); ``errors`` is Cog's ``detail``
    list (empty when valid); ``dropped`` names the unknown keys that were removed.
    """

    value: Any
    errors: list
    dropped: list

    @property
    def ok(self) -> bool:
        return not self.errors


def _show(value: Any) -> str:
    """A value as the Rust validator prints it: compact JSON, non-ASCII kept."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    # JSON Schema: 1.0 is an integer (the Rust validator agrees); booleans are not.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def _json_equal(a: Any, b: Any) -> bool:
    """Equality with JSON semantics: ``1 == 1.0`` but ``True != 1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _pointer(path: tuple) -> str:
    """Instance path as coglet prints it: JSON pointer without the leading slash."""
    return "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


class _Compiler:
    """Turns schema nodes into checks, resolving ``$ref`` against the document's components."""

    def __init__(self, schemas: dict):
        self.schemas = schemas
        self.refs: dict[str, Check] = {}

    def ref(self, target: str) -> Check:
        if target in self.refs:
            return self.refs[target]
        if not target.startswith(_REF_PREFIX) or target[len(_REF_PREFIX):] not in self.schemas:
            log.warning("Input schema refers to %s, which the document does not define; not checked", target)
            return _accept
        # Bind a trampoline first so recursive references terminate.
        slot: list[Check] = []
        self.refs[target] = lambda v, p, e: slot[0](v, p, e)
        slot.append(self.compile(self.schemas[target[len(_REF_PREFIX):]]))
        return slot[0]

    def compile(self, node: Any) -> Check:
        if not isinstance(node, dict):
            # ``true``/``{}`` accept everything; ``false`` is not something schema.py emits.
            return _accept
        checks: list[Check] = []
        if isinstance(node.get("$ref"), str):
            checks.append(self.ref(node["$ref"]))
        for key in sorted(node):
            maker = getattr(self, "k_" + key, None)
            if maker is not None:
                check = maker(node[key], node)
                if check is not None:
                    checks.append(check)
        nullable = node.get("nullable") is True
        if not checks:
            return _accept
        if len(checks) == 1 and not nullable:
            return checks[0]

        def run(value: Any, path: tuple, errors: list) -> None:
            if nullable and value is None:
                return  # minicog honours OpenAPI's nullable (coglet does not)
            for check in checks:
                check(value, path, errors)

        return run

    # --- keywords (each returns a check, or None when it has nothing to check) ---------

    def k_type(self, spec: Any, node: dict) -> Optional[Check]:
        names = [spec] if isinstance(spec, str) else list(spec) if isinstance(spec, list) else []
        tests = [_TYPE_TESTS[n] for n in names if n in _TYPE_TESTS]
        if not tests:
            return None
        if len(names) == 1:
            expected = f'type "{names[0]}"'
        else:
            expected = "types " + ", ".join(f'"{n}"' for n in names)

        def check(value: Any, path: tuple, errors: list) -> None:
            for test in tests:
                if test(value):
                    return
            errors.append((path, f"{_show(value)} is not of {expected}"))

        return check

    def k_enum(self, options: Any, node: dict) -> Optional[Check]:
        if not isinstance(options, list):
            return None
        shown = _show(options)
        hashable = {(type(o), o) for o in options if isinstance(o, str)}
        all_strings = len(hashable) == len(options)

        def check(value: Any, path: tuple, errors: list) -> None:
            if all_strings:  # the common case (choices of str): a set lookup
                if isinstance(value, str) and (str, value) in hashable:
                    return
            elif any(_json_equal(value, o) for o in options):
                return
            errors.append((path, f"{_show(value)} is not one of {shown}"))

        return check

    def k_format(self, spec: Any, node: dict) -> Optional[Check]:
        if spec != "uri":
            return None
        from .files import file_input_problem

        def check(value: Any, path: tuple, errors: list) -> None:
            if isinstance(value, str):
                problem = file_input_problem(value)
                if problem is not None:
                    errors.append((path, problem))

        return check

    def k_allOf(self, subs: Any, node: dict) -> Optional[Check]:
        if not isinstance(subs, list):
            return None
        checks = [self.compile(s) for s in subs]

        def check(value: Any, path: tuple, errors: list) -> None:
            for sub in checks:
                sub(value, path, errors)

        return check

    def k_anyOf(self, subs: Any, node: dict) -> Optional[Check]:
        if not isinstance(subs, list):
            return None
        checks = [self.compile(s) for s in subs]

        def check(value: Any, path: tuple, errors: list) -> None:
            for sub in checks:
                scratch: list = []
                sub(value, path, scratch)
                if not scratch:
                    return
            errors.append((path, f"{_show(value)} is not valid under any of the schemas listed in the 'anyOf' keyword"))

        return check

    def k_items(self, spec: Any, node: dict) -> Optional[Check]:
        if not isinstance(spec, dict):
            return None
        item = self.compile(spec)
        if item is _accept:
            return None

        def check(value: Any, path: tuple, errors: list) -> None:
            if isinstance(value, list):
                for i, element in enumerate(value):
                    item(element, path + (i,), errors)

        return check

    def k_properties(self, spec: Any, node: dict) -> Optional[Check]:
        if not isinstance(spec, dict):
            return None
        props = [(name, self.compile(sub)) for name, sub in spec.items()]

        def check(value: Any, path: tuple, errors: list) -> None:
            if isinstance(value, dict):
                for name, sub in props:
                    if name in value:
                        sub(value[name], path + (name,), errors)

        return check

    def k_additionalProperties(self, spec: Any, node: dict) -> Optional[Check]:
        known = set(node.get("properties") or ())
        if spec is False:
            def check(value: Any, path: tuple, errors: list) -> None:
                if isinstance(value, dict):
                    extra = [k for k in value if k not in known]
                    if extra:
                        names = ", ".join(f"'{k}'" for k in extra)
                        verb = "was" if len(extra) == 1 else "were"
                        errors.append((path, f"Additional properties are not allowed ({names} {verb} unexpected)"))
            return check
        if not isinstance(spec, dict):
            return None
        sub = self.compile(spec)

        def check(value: Any, path: tuple, errors: list) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    if k not in known:
                        sub(v, path + (k,), errors)

        return check

    def k_required(self, spec: Any, node: dict) -> Optional[Check]:
        if not isinstance(spec, list) or not spec:
            return None

        def check(value: Any, path: tuple, errors: list) -> None:
            if isinstance(value, dict):
                for name in spec:
                    if name not in value:
                        errors.append((path, f"{_show(name)} is a required property"))

        return check

    def _bound(self, limit: Any, fails: Callable[[Any, Any], bool], text: str) -> Optional[Check]:
        if not _is_number(limit):
            return None
        shown = _show(limit)

        def check(value: Any, path: tuple, errors: list) -> None:
            if _is_number(value) and fails(value, limit):
                errors.append((path, f"{_show(value)} is {text} {shown}"))

        return check

    def k_maximum(self, limit: Any, node: dict) -> Optional[Check]:
        return self._bound(limit, lambda v, l: v > l, "greater than the maximum of")

    def k_minimum(self, limit: Any, node: dict) -> Optional[Check]:
        return self._bound(limit, lambda v, l: v < l, "less than the minimum of")

    def k_exclusiveMaximum(self, limit: Any, node: dict) -> Optional[Check]:
        return self._bound(limit, lambda v, l: v >= l, "greater than or equal to the maximum of")

    def k_exclusiveMinimum(self, limit: Any, node: dict) -> Optional[Check]:
        return self._bound(limit, lambda v, l: v <= l, "less than or equal to the minimum of")

    def k_minLength(self, limit: Any, node: dict) -> Optional[Check]:
        if not _is_integer(limit):
            return None
        limit = int(limit)
        tail = f"is shorter than {_plural(limit, 'character')}"

        def check(value: Any, path: tuple, errors: list) -> None:
            if isinstance(value, str) and len(value) < limit:
                errors.append((path, f"{_show(value)} {tail}"))

        return check

    def k_maxLength(self, limit: Any, node: dict) -> Optional[Check]:
        if not _is_integer(limit):
            return None
        limit = int(limit)
        tail = f"is longer than {_plural(limit, 'character')}"

        def check(value: Any, path: tuple, errors: list) -> None:
            if isinstance(value, str) and len(value) > limit:
                errors.append((path, f"{_show(value)} {tail}"))

        return check

    def k_pattern(self, pattern: Any, node: dict) -> Optional[Check]:
        if not isinstance(pattern, str):
            return None
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            log.warning("Input schema pattern %r is not a valid regular expression (%s); not checked", pattern, exc)
            return None
        shown = _show(pattern)

        def check(value: Any, path: tuple, errors: list) -> None:
            if isinstance(value, str) and regex.search(value) is None:
                errors.append((path, f"{_show(value)} does not match {shown}"))

        return check


def _accept(value: Any, path: tuple, errors: list) -> None:
    return None


def _secret_shape(node: Any, schemas: dict, depth: int = 0) -> Optional[str]:
    """``"value"`` if *node* describes a secret, ``"items"`` for an array of secrets, else None.

    A secret is what Cog's generator (and :mod:`minicog.schema`) publishes for
    ``Secret``: ``format: password`` with ``x-cog-secret``; either mark counts, and
    ``$ref``/``allOf``/``anyOf`` wrappers are looked through.
    """
    if not isinstance(node, dict) or depth > 8:
        return None
    if node.get("x-cog-secret") is True or node.get("format") == "password":
        return "value"
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        if _secret_shape(schemas.get(ref[len(_REF_PREFIX):]), schemas, depth + 1):
            return "value"
    for key in ("allOf", "anyOf", "oneOf"):
        subs = node.get(key)
        if isinstance(subs, list) and any(_secret_shape(sub, schemas, depth + 1) for sub in subs):
            return "value"
    if _secret_shape(node.get("items"), schemas, depth + 1):
        return "items"
    return None


def _mask(value: Any, shape: str) -> Any:
    if value is None:
        return None  # an absent secret stays visibly absent, as str(Secret(None)) == ""
    if shape == "items" and isinstance(value, list):
        return [None if v is None else REDACTED for v in value]
    return REDACTED



# Unknown input names shown in the warning at most, and characters per name: a request
# may carry any number of keys of any length, and the log line must stay bounded.
_LOG_NAMES = 20
_LOG_NAME_CHARS = 64


def _names_for_log(names: list) -> str:
    """Up to ``_LOG_NAMES`` names, each cut to ``_LOG_NAME_CHARS``, and how many more."""
    shown = [n if len(n) <= _LOG_NAME_CHARS else n[:_LOG_NAME_CHARS] + "..."
             for n in map(str, names[:_LOG_NAMES])]
    text = ", ".join(shown)
    if len(names) > _LOG_NAMES:
        text += f" (and {len(names) - _LOG_NAMES} more)"
    return text


class Validator:
    """The ``component`` schema of an OpenAPI document, compiled for repeated use.

    ``component="TrainingInput"`` falls back to ``Input`` when the document has no
    training input (as coglet's training routes do).  A document without either
    component validates nothing except that the input is an object.
    """

    def __init__(self, doc: dict, component: str = "Input"):
        schemas = ((doc or {}).get("components") or {}).get("schemas") or {}
        root = schemas.get(component)
        if root is None and component == "TrainingInput":
            root = schemas.get("Input")
        self.component = component
        self.enabled = isinstance(root, dict)
        root = root if isinstance(root, dict) else {}
        compiler = _Compiler(schemas)
        properties = root.get("properties") or {}
        self.properties: dict[str, Check] = {name: compiler.compile(sub) for name, sub in properties.items()}
        self.required: list[str] = [n for n in (root.get("required") or []) if isinstance(n, str)]
        required = set(self.required)
        # Coglet's rule: inject null only for nullable, optional inputs without a default
        # (defaults themselves are applied by Python, never by the validator).
        self.inject_null = [
            name for name, sub in properties.items()
            if isinstance(sub, dict) and sub.get("nullable") is True and name not in required and "default" not in sub
        ]
        self.secrets: dict[str, str] = {}
        for name, sub in properties.items():
            shape = _secret_shape(sub, schemas)
            if shape is not None:
                self.secrets[name] = shape

    def redact(self, value: Any) -> Any:
        """A copy of the input *value* with every secret input's value replaced by
        :data:`REDACTED`: the form in which a prediction's input may be echoed."""
        if not self.secrets or not isinstance(value, dict):
            return value
        out = dict(value)
        for name, shape in self.secrets.items():
            if name in out:
                out[name] = _mask(out[name], shape)
        return out

    def validate(self, value: Any) -> ValidationResult:
        if not isinstance(value, dict):
            entry = {"loc": ["body", "input"], "msg": f'{_show(value)} is not of type "object"', "type": VALUE_TYPE}
            return ValidationResult(value, [entry], [])
        if not self.enabled:
            return ValidationResult(value, [], [])
        props = self.properties
        dropped = [k for k in value if k not in props]
        if dropped:
            log.warning("Stripped unknown input fields: %s", _names_for_log(dropped))
            value = {k: v for k, v in value.items() if k in props}
        else:
            value = dict(value)
        found: list = []
        for name, check in props.items():
            if name in value:
                check(value[name], (name,), found)
        errors = [
            {"loc": ["body", "input", _pointer(path) or "__root__"], "msg": msg, "type": VALUE_TYPE}
            for path, msg in found
        ]
        for name in self.required:
            if name not in value:
                errors.append({"loc": ["body", "input", name], "msg": "Field required", "type": MISSING_TYPE})
        if not errors:
            for name in self.inject_null:
                value.setdefault(name, None)
        return ValidationResult(value, errors, dropped)


# A few compiled documents, keyed by id(); each entry keeps its document alive so the
# id cannot be recycled while cached.  A server has one or two documents (predict and
# train); the bound only matters for tests and embedders that build many.
_CACHE_SIZE = 8
_cache: dict[tuple[int, str], tuple[dict, Validator]] = {}
_cache_lock = threading.Lock()


def _validator_for(doc: dict, component: str) -> Validator:
    key = (id(doc), component)
    hit = _cache.get(key)
    if hit is not None and hit[0] is doc:
        return hit[1]
    validator = Validator(doc, component)
    with _cache_lock:
        if len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)), None)
        _cache[key] = (doc, validator)
    return validator


def validate_input(doc: dict, value: Any, *, component: str = "Input") -> ValidationResult:
    """Validate a request's ``input`` against ``doc``'s *component* schema.

    Returns the cleaned value, Cog's ``detail`` list (all problems at once; empty
    when valid) and the names of the unknown keys that were dropped.  The compiled
    schema is cached per document object: do not mutate a document after first use
    (build a new one instead).
    """
    return _validator_for(doc, component).validate(value)


def redact_input(doc: Optional[dict], value: Any, *, component: str = "Input") -> Any:
    """*value* with its secret inputs (per *doc*'s *component*) replaced by :data:`REDACTED`.

    The one redaction point for echoes: the service stores only this form in a
    prediction's record, so responses, webhooks, SSE events and any later read of
    the record can never show a secret.  Without a schema nothing is known to be
    secret and *value* is returned as is.
    """
    if not doc:
        return value
    return _validator_for(doc, component).redact(value)
