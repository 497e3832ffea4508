"""``predict`` (alias ``run``) and ``train``: one prediction from the command line, as ``cog predict`` does it.

The reference is Cog's Go CLI at the 0.23 era (replicate/cog ``pkg/cli/predict.go``
``cmdPredict``/``runPrediction``, ``pkg/cli/train.go`` ``cmdTrain``,
``pkg/predict/input.go`` and ``input_validation.go``), so that a script written
for ``cog predict`` works with ``python -m minicog predict`` in its place:

* **Inputs** (``-i NAME=VALUE`` or ``--json``, never both): each VALUE is read as
  its input's schema type; a VALUE in double quotes loses them; ``@path`` reads
  a local file for a file input.  They are checked against the schema the worker
  sends *before* ``setup()`` runs (:meth:`Model.wait_schema`), with Cog's
  messages (``unknown input "x"; valid inputs are: a, b``, ``missing required
  input "y"``, ``invalid input "a": expected number, got string``), so a typo
  never costs a long setup.
* **Output**: a string is printed as is, anything else as indented JSON with
  Go's rules (sorted keys, ``<>&`` escaped, ``1.0`` printed ``1``); iterators
  are printed whole once the prediction ends (live, item by item, only when
  stdout is a terminal or with ``--stream``).  File outputs are written to
  ``output.<ext>`` (``output.<i>.<ext>`` for lists), ``weights.<ext>`` for
  ``train``, or to ``-o PATH``, each announced with ``Written output to: PATH``
  on stderr.  ``--json`` prints (or with ``-o`` writes) the prediction object.
* **Errors** are one message on stderr, worded as Cog words them, exit status 1
  (every failure, as ``cog`` exits 1 through ``console.Fatalf``); 130 after
  Ctrl-C, which cancels the running prediction first; 143 after SIGTERM, which
  does the same (the worker is stopped and its temporary folder removed).

What differs from ``cog predict`` is listed, with the reasons, in README.rst
("One-shot predictions").
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import decimal
import json
import os
import pathlib
import shutil
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from . import errors
from .settings import CLI_SETUP_TIMEOUT

__all__ = ["CliError", "run_command", "parse_input_flags", "parse_input_value", "read_json_inputs",
           "check_input_names", "check_inputs", "go_json", "cog_extension", "ensure_output_writable",
           "EXIT_OK", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "DEFAULT_SETUP_TIMEOUT",
           "Terminated", "sigterm_interrupts"]

EXIT_OK = 0
#: Every failure: bad flags, bad input, setup failed, prediction failed (Cog's console.Fatalf exits 1).
EXIT_FAILED = 1
#: Ctrl-C (SIGINT): the running prediction is canceled first.
EXIT_INTERRUPTED = 130
#: SIGTERM (``timeout``, a supervisor): handled as Ctrl-C is, then 128 + 15.
EXIT_TERMINATED = 143

#: Seconds ``--setup-timeout`` allows by default (Cog's default; see minicog/settings.py).
DEFAULT_SETUP_TIMEOUT = CLI_SETUP_TIMEOUT

_REF_PREFIX = "#/components/schemas/"


class CliError(Exception):
    """A failure reported as one message on stderr (no prefix, as Cog prints it) and exit status 1."""


# --------------------------------------------------------------------------------------
# schema helpers
# --------------------------------------------------------------------------------------

def _resolve(doc: Optional[dict], node: Any) -> dict:
    """Follow ``$ref`` / single ``allOf`` wrappers to the schema object that says the type."""
    schemas = ((doc or {}).get("components") or {}).get("schemas") or {}
    for _ in range(10):  # bounded: refs in Cog schemas are at most a couple deep
        if not isinstance(node, dict):
            return {}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            node = schemas.get(ref[len(_REF_PREFIX):], {})
            continue
        all_of = node.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and "type" not in node:
            merged = dict(node)
            merged.pop("allOf")
            inner = _resolve(doc, all_of[0])
            return {**inner, **{k: v for k, v in merged.items() if k not in inner}}
        return node
    return node


def _types_of(doc: Optional[dict], node: Any) -> List[str]:
    node = _resolve(doc, node)
    t = node.get("type")
    if isinstance(t, str):
        return [t]
    if isinstance(t, list):
        return [x for x in t if isinstance(x, str)]
    out: List[str] = []
    for key in ("anyOf", "oneOf"):
        for sub in node.get(key) or []:
            out.extend(_types_of(doc, sub))
    return out


def _is_file(doc: Optional[dict], node: Any) -> bool:
    node = _resolve(doc, node)
    if node.get("format") == "uri":
        return True
    return any(_is_file(doc, sub) for key in ("anyOf", "oneOf") for sub in node.get(key) or [])


def input_component(doc: Optional[dict], mode: str) -> Optional[dict]:
    """``TrainingInput`` (train mode, else ``Input``), as Cog's ``inputComponentForMode``; None if absent."""
    schemas = ((doc or {}).get("components") or {}).get("schemas") or {}
    root = schemas.get("TrainingInput") if mode == "train" else None
    if not isinstance(root, dict):
        root = schemas.get("Input")
    return root if isinstance(root, dict) and isinstance(root.get("properties"), dict) else None


def output_schema(doc: Optional[dict], mode: str) -> Optional[dict]:
    """The resolved ``Output`` (``TrainingOutput`` in train mode) component, or None."""
    schemas = ((doc or {}).get("components") or {}).get("schemas") or {}
    out = schemas.get("TrainingOutput") if mode == "train" else None
    if not isinstance(out, dict):
        out = schemas.get("Output")
    return _resolve(doc, out) if isinstance(out, dict) else None


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------

def parse_input_flags(pairs: Sequence[str]) -> Dict[str, List[str]]:
    """``-i NAME=VALUE`` flags grouped by name, in order (Cog's ``parseInputFlags``).

    A VALUE wrapped in double quotes loses them (``-i 'text="Athena"'``); a flag
    without ``=`` is Cog's ``Failed to parse input ...`` error.
    """
    grouped: Dict[str, List[str]] = {}
    for pair in pairs:
        if "=" not in pair:
            raise CliError(f"Failed to parse input '{pair}', expected format is 'name=value'")
        name, value = pair.split("=", 1)
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        grouped.setdefault(name, []).append(value)
    return grouped


def parse_input_value(text: str, node: Optional[dict], doc: Optional[dict] = None, *, name: str = "input") -> Any:
    """Read one ``-i`` VALUE as the JSON value its schema *node* expects.

    Text that does not parse as the expected type is returned unchanged, so that
    validation reports it with Cog's message.  ``@path`` for a file input becomes
    a ``data:`` URI (a missing file is Cog's ``open PATH: no such file ...``).
    """
    from . import files  # lazily: urllib.request & co. cost start-up time

    node = _resolve(doc, node or {})
    if _is_file(doc, node):
        if text.startswith("@"):
            return _file_to_data_uri(text[1:], name)
        if not files.is_url(text) and not (text == "null" and node.get("nullable")):
            # A bare local path is what people type; accept it when the file exists.
            if os.path.isfile(text):
                return _file_to_data_uri(text, name)
            raise CliError(f'input "{name}": expected @path to a local file or an http(s)/data: URL, got {text!r}')
    types = _types_of(doc, node)
    if not types:  # no schema: best effort, JSON if it parses
        return _maybe_json(text)
    if text == "null" and (node.get("nullable") or "null" in types) and "string" not in types:
        return None
    # A string accepts any text, so it is tried last: `str | float` reads "1.5" as a
    # number, as Cog's coerceScalarValue does, whatever order the union was written in.
    for t in sorted(types, key=lambda t: t == "string"):
        if t == "integer":
            try:
                return int(text, 10)
            except ValueError:
                continue
        elif t == "number":
            try:
                value = float(text)
            except ValueError:
                continue
            return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
        elif t == "boolean":
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
        elif t in ("object", "array"):
            try:
                value = json.loads(text)
            except ValueError:
                continue
            if isinstance(value, dict if t == "object" else list):
                return value
        elif t == "string":
            return text
    return text


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _file_to_data_uri(path: str, name: str) -> str:
    from .files import data_uri, guess_mime

    expanded = os.path.expanduser(path)
    try:
        with open(expanded, "rb") as f:
            data = f.read()
    except OSError as exc:
        # Go's os.ReadFile wording, as Cog's materialize() reports it.
        reason = (exc.strerror or str(exc)).lower()
        raise CliError(f'input "{name}": open {path}: {reason}') from None
    return data_uri(data, guess_mime(expanded))


def coerce_inputs(grouped: Dict[str, List[str]], doc: Optional[dict], component: Optional[dict]) -> Dict[str, Any]:
    """``-i`` texts → JSON values by schema type (Cog's ``NewInputsForMode``).

    A name given more than once becomes an array whose items are read as the
    array's item type (raw text when the input is not an array, so validation
    says ``expected string, got array`` as Cog does).
    """
    props = (component or {}).get("properties") or {}
    inputs: Dict[str, Any] = {}
    for name, texts in grouped.items():
        node = _resolve(doc, props.get(name) or {})
        is_array = "array" in _types_of(doc, node)
        items = node.get("items") if is_array else None
        if len(texts) > 1:
            inputs[name] = [parse_input_value(t, items, doc, name=name) if items is not None else t for t in texts]
        elif is_array and items is not None:
            text = texts[0]
            if text.lstrip().startswith("[") and not _is_file(doc, items):
                parsed = _maybe_json(text)
                if isinstance(parsed, list):
                    inputs[name] = parsed
                    continue
            inputs[name] = [parse_input_value(text, items, doc, name=name)]
        else:
            inputs[name] = parse_input_value(texts[0], node, doc, name=name)
    return inputs


def read_json_inputs(spec: str, stdin: TextIO) -> Dict[str, Any]:
    """The ``--json`` object: inline JSON, ``@FILE``, or ``@-`` / ``-`` for stdin (Cog's ``parseJSONInput``)."""
    if spec in ("-", "@-"):
        text = stdin.read()
    elif spec.startswith("@"):
        try:
            with open(spec[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise CliError(f'Failed to read JSON from file "{spec[1:]}": open {spec[1:]}: {reason}') from None
    else:
        text = spec
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"Failed to parse JSON: {exc}") from None
    if value is None:
        return {}  # Go unmarshals null into an empty map
    if not isinstance(value, dict):
        kind = {bool: "bool", str: "string", list: "array"}.get(type(value), "number")
        raise CliError(f"Failed to parse JSON: json: cannot unmarshal {kind} into Go value of type "
                       "map[string]interface {}")
    return value


def json_file_inputs(values: Dict[str, Any], doc: Optional[dict], component: Optional[dict]) -> Dict[str, Any]:
    """``"@path"`` strings in ``--json`` for file inputs (or lists of them) → data: URIs."""
    props = (component or {}).get("properties") or {}
    out = dict(values)
    for name, value in values.items():
        node = _resolve(doc, props.get(name) or {})
        if _is_file(doc, node) and isinstance(value, str) and value.startswith("@"):
            out[name] = _file_to_data_uri(value[1:], name)
        elif isinstance(value, list) and node.get("items") is not None and _is_file(doc, node["items"]):
            out[name] = [_file_to_data_uri(v[1:], name) if isinstance(v, str) and v.startswith("@") else v
                         for v in value]
    return out


def check_input_names(names: Sequence[str], component: dict) -> None:
    """Cog's ``validateKnownInputs``: every name must be a declared input (checked before files are read)."""
    declared = component.get("properties") or {}
    unknown = sorted(n for n in names if n not in declared)
    if not unknown:
        return
    valid = sorted(declared)
    suffix = f"valid inputs are: {', '.join(valid)}" if valid else "model does not accept inputs"
    if len(unknown) == 1:
        raise CliError(f"unknown input {_q(unknown[0])}; {suffix}")
    raise CliError(f"unknown inputs {', '.join(_q(n) for n in unknown)}; {suffix}")


def _q(text: str) -> str:
    """Go's %q for the plain names and paths used here."""
    return json.dumps(text, ensure_ascii=False)


def check_inputs(values: Dict[str, Any], doc: Optional[dict], component: dict) -> None:
    """Cog's ``ValidateInputMapForMode``: explicit nulls, then the schema, with kin-openapi's wording.

    One problem is reported as its message; several as ``input validation
    failed:`` and one ``- message`` line each (properties in name order, then
    the missing required inputs), as Cog's ``formatInputValidationError``.
    minicog accepts ``null`` where the schema says ``nullable`` (an input whose
    default is None), because its runtime accepts it there.
    """
    props = component.get("properties") or {}
    for name in sorted(values):
        problem = _null_problem(values[name], props.get(name), doc, name)
        if problem:
            raise CliError(problem)
    problems: List[str] = []
    for name in sorted(values):
        if name in props:
            problems.extend(_check_value(values[name], props[name], doc, name))
    for name in component.get("required") or []:
        if name not in values:
            problems.append(f"missing required input {_q(name)}")
    if len(problems) == 1:
        raise CliError(problems[0])
    if problems:
        raise CliError("input validation failed:\n- " + "\n- ".join(problems))


def _null_problem(value: Any, node: Any, doc: Optional[dict], path: str) -> Optional[str]:
    resolved = _resolve(doc, node or {})
    if value is None:
        if node is None or resolved.get("nullable") or "null" in _types_of(doc, resolved):
            return None
        return f"invalid input {_q(path)}: must not be null (omit the input to use its default)"
    if isinstance(value, list) and isinstance(resolved.get("items"), dict):
        for i, item in enumerate(value):
            problem = _null_problem(item, resolved["items"], doc, f"{path}.{i}")
            if problem:
                return problem
    if isinstance(value, dict) and isinstance(resolved.get("properties"), dict):
        for key in sorted(value):
            sub = resolved["properties"].get(key)
            if sub is not None:
                problem = _null_problem(value[key], sub, doc, f"{path}.{key}")
                if problem:
                    return problem
    return None


def _json_type(value: Any) -> str:
    """Cog's ``jsonTypeName``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _type_ok(value: Any, t: str) -> bool:
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "array":
        return isinstance(value, list)
    if t == "object":
        return isinstance(value, dict)
    return True


def _enum_text(options: list) -> str:
    """Go's ``%v`` of each allowed value, comma separated (Cog's ``formatEnumValues``)."""
    return ", ".join(o if isinstance(o, str) else go_json(o, indent=False) for o in options)


def _check_value(value: Any, node: Any, doc: Optional[dict], path: str) -> List[str]:
    """The kin-openapi problems for one value (``invalid input "path": reason``)."""
    node = _resolve(doc, node or {})
    if value is None:
        return []  # nulls were checked first
    where = f"invalid input {_q(path)}: "
    enum = node.get("enum")
    if isinstance(enum, list) and enum and not any(_same(value, o) for o in enum):
        return [where + f"must be one of: {_enum_text(enum)}"]
    for key in ("allOf",):
        for sub in node.get(key) or []:
            found = _check_value(value, sub, doc, path)
            if found:
                return found
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and any_of and not any(not _check_value(value, s, doc, path) for s in any_of):
        return [where + 'value doesn\'t match any schema from "anyOf"']
    t = node.get("type")
    types = [t] if isinstance(t, str) else [x for x in t if isinstance(x, str)] if isinstance(t, list) else []
    if types and not any(_type_ok(value, x) for x in types):
        expected = types[0] if len(types) == 1 else ", ".join(types[:-1]) + " or " + types[-1]
        return [where + f"expected {expected}, got {_json_type(value)}"]
    problems: List[str] = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = node.get("minimum"), node.get("maximum")
        if isinstance(low, (int, float)):
            if node.get("exclusiveMinimum") is True and value <= low:
                problems.append(where + f"number must be more than {_go_g(low)}")
            elif value < low:
                problems.append(where + f"number must be at least {_go_g(low)}")
        if isinstance(high, (int, float)):
            if node.get("exclusiveMaximum") is True and value >= high:
                problems.append(where + f"number must be less than {_go_g(high)}")
            elif value > high:
                problems.append(where + f"number must be at most {_go_g(high)}")
    elif isinstance(value, str):
        if isinstance(node.get("minLength"), int) and len(value) < node["minLength"]:
            problems.append(where + f"minimum string length is {node['minLength']}")
        if isinstance(node.get("maxLength"), int) and len(value) > node["maxLength"]:
            problems.append(where + f"maximum string length is {node['maxLength']}")
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            import re

            try:
                matched = re.search(pattern, value) is not None
            except re.error:
                matched = True  # a pattern Python cannot read is left to the runtime validator
            if not matched:
                problems.append(where + f"string doesn't match the regular expression {_q(pattern)}")
    elif isinstance(value, list):
        if isinstance(node.get("minItems"), int) and len(value) < node["minItems"]:
            problems.append(where + f"minimum number of items is {node['minItems']}")
        if isinstance(node.get("maxItems"), int) and len(value) > node["maxItems"]:
            problems.append(where + f"maximum number of items is {node['maxItems']}")
        if node.get("items") is not None:
            for i, item in enumerate(value):
                problems.extend(_check_value(item, node["items"], doc, f"{path}.{i}"))
    elif isinstance(value, dict) and isinstance(node.get("properties"), dict):
        for key in sorted(value):
            if key in node["properties"]:
                problems.extend(_check_value(value[key], node["properties"][key], doc, f"{path}.{key}"))
        for key in node.get("required") or []:
            if key not in value:
                problems.append(f"missing required input {_q(f'{path}.{key}')}")
    return problems


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


# --------------------------------------------------------------------------------------
# Go's formatting: JSON (encoding/json + json.Indent) and %g
# --------------------------------------------------------------------------------------

def _go_float(value: float) -> str:
    """A float64 as Go's encoding/json writes it: ``1`` for 1.0, ``0.00001``, ``1e-7``, ``1e+21``."""
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    if 1e-6 <= abs(value) < 1e21:
        text = format(decimal.Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    text = repr(value)  # shortest digits, exponent form at these magnitudes
    mantissa, _, exponent = text.partition("e")
    sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
    if sign == "-" and len(digits) == 1:
        return f"{mantissa}e-{digits}"  # Go cleans e-07 to e-7
    return f"{mantissa}e{sign}{digits.rjust(2, '0')}"


def _go_g(value: Any) -> str:
    """Go's ``%g`` (shortest digits; exponent form below 1e-4 or from 1e6), as kin-openapi prints limits."""
    d = decimal.Decimal(repr(float(value))).normalize()
    sign, digits, _ = d.as_tuple()
    exponent = d.adjusted()
    if exponent < -4 or exponent >= 6:
        mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
        return f"{'-' if sign else ''}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    text = format(d, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_string(text: str) -> str:
    out = json.dumps(text, ensure_ascii=False)
    if any(c in out for c in _GO_ESCAPES):
        out = "".join(_GO_ESCAPES.get(c, c) for c in out)
    return out


def go_json(value: Any, *, indent: bool = True, sort_keys: bool = True, _level: int = 0) -> str:
    """*value* as Cog prints JSON: Go's ``json.Marshal`` then ``json.Indent(.., "", "  ")``.

    Object keys are sorted (a Go map; pass ``sort_keys=False`` for a struct, whose
    fields keep their order), ``<``, ``>`` and ``&`` are escaped, and numbers are
    float64 (``3.0`` prints ``3``).
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, os.PathLike):
        return _go_string(os.fspath(value))
    pad = "\n" + "  " * (_level + 1) if indent else ""
    end = "\n" + "  " * _level if indent else ""
    colon = ": " if indent else ":"
    if isinstance(value, dict):
        if not value:
            return "{}"
        keys = sorted(value, key=str) if sort_keys else list(value)
        parts = [f"{_go_string(str(k))}{colon}{go_json(value[k], indent=indent, _level=_level + 1)}" for k in keys]
        return "{" + pad + ("," + pad).join(parts) + end + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        parts = [go_json(v, indent=indent, _level=_level + 1) for v in value]
        return "[" + pad + ("," + pad).join(parts) + end + "]"
    return _go_string(str(value))


# --------------------------------------------------------------------------------------
# output files
# --------------------------------------------------------------------------------------

#: Extensions Cog's ``pkg/util/mime`` table picks where Python's mimetypes may differ.
_COG_EXTENSIONS = {
    "application/octet-stream": ".bin", "application/ogg": ".ogx", "audio/aac": ".aac", "audio/mpeg": ".mp3",
    "audio/ogg": ".oga", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/webm": ".weba", "image/bmp": ".bmp",
    "image/jpeg": ".jpg", "image/tiff": ".tiff", "image/vnd.microsoft.icon": ".ico", "image/x-ms-bmp": ".bmp",
    "text/javascript": ".js", "text/plain": ".txt", "video/mpeg": ".mpeg", "video/ogg": ".ogv",
}


def cog_extension(mime: Optional[str]) -> str:
    """The extension Cog gives a file output of type *mime* (``mime.ExtensionByType``), or ""."""
    from .files import guess_extension

    base = (mime or "").split(";", 1)[0].strip().lower()
    if not base:
        return ""
    return _COG_EXTENSIONS.get(base) or guess_extension(base) or ""


def _go_ext(path: str) -> str:
    """Go's ``path.Ext``: from the last dot of the last element (``.bashrc`` counts)."""
    base = path.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:] if dot >= 0 else ""


def _trim_ext(path: str) -> str:
    ext = _go_ext(path)
    return path[: len(path) - len(ext)] if ext else path


def ensure_output_writable(output: Optional[str], fallback: str) -> str:
    """Cog's ``ensureOutputWriteable``: the path to write, or CliError.

    No path → *fallback* (an existing folder by that name is an error); an existing
    folder → *fallback*'s name inside it; a new file → its folder must be
    writable.  minicog also creates a folder named with a trailing ``/``.
    """
    using_fallback = not output
    given = output or fallback
    path = os.path.expanduser(given[1:] if given.startswith("@") else given)
    if path.endswith("/") and not os.path.exists(path):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise CliError(f"Output path is not writable: {exc.strerror or exc}") from None
    if not os.path.exists(path):
        folder = os.path.dirname(path) or "."
        if not os.access(folder, os.W_OK):
            raise CliError(f"Output path is not writable: Output directory is not writable: {folder}")
        return path
    if os.path.isdir(path):
        if using_fallback:
            raise CliError(f"Default output name {_q(path)} conflicts with directory, provide --output")
        if not os.access(path, os.W_OK):
            raise CliError("Output path is not writable: permission denied")
        return os.path.join(path, os.path.basename(fallback))
    if not os.access(path, os.W_OK):
        raise CliError("Output path is not writable: permission denied")
    return path


def _written(path: str) -> None:
    print(f"Written output to: {path}", file=sys.stderr, flush=True)


def write_file_output(value: Any, destination: str) -> str:
    """Cog's ``WriteDataURLToFile``: write one file output to *destination*, adding the
    extension of its type when *destination* has none (or a numeric one, ``output.0``)."""
    from .files import guess_mime, parse_data_uri

    if isinstance(value, os.PathLike):
        source: Optional[str] = os.fspath(value)
        data = None
        mime = guess_mime(source)
    else:
        source = None
        mime, data = parse_data_uri(str(value))
    ext = _go_ext(destination)
    folder = os.path.dirname(destination)
    name = _trim_ext(os.path.basename(destination))
    if ext[1:].isdigit():
        ext, name = "", os.path.basename(destination)
    if not ext:
        ext = cog_extension(mime)
    target = os.path.join(folder, name + ext) if folder else name + ext
    if source is not None:
        shutil.copyfile(source, target)
    else:
        with open(target, "wb") as f:
            f.write(data or b"")
    _written(target)
    return target


def _is_file_value(value: Any) -> bool:
    return isinstance(value, os.PathLike) or (isinstance(value, str) and value.startswith("data:"))


def process_file_outputs(output: Any, schema: Optional[dict], destination: str) -> Any:
    """Cog's ``processFileOutputs``: a file output, or a list of them, written to disk.

    Returns the output with each file replaced by the path written (a new object
    only then: the caller tells from that whether files were written).  Files
    nested in objects stay as they arrived (data: URIs), as in Cog.
    """
    schema = schema or {}
    uri = schema.get("format") == "uri"
    items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
    if (uri or not schema) and _is_file_value(output):
        return write_file_output(output, destination)
    if isinstance(output, list) and (items.get("format") == "uri" or any(isinstance(v, os.PathLike) for v in output)):
        stem, ext = _trim_ext(destination), _go_ext(destination)
        return [write_file_output(v, f"{stem}.{i}{ext}") if _is_file_value(v) else v for i, v in enumerate(output)]
    return output


# --------------------------------------------------------------------------------------
# live printing (terminal or --stream)
# --------------------------------------------------------------------------------------

class LivePrinter:
    """Prints iterator items as they arrive: ConcatenateIterator text joined, others one per line."""

    def __init__(self, out: TextIO, *, concatenate: bool):
        self.out = out
        self.concatenate = concatenate
        self.ends_with_newline = True
        self.lock = threading.Lock()

    def item(self, index: int, value: Any) -> None:
        if _is_file_value(value):
            return  # files are written, with Cog's names, when the prediction ends
        if self.concatenate and isinstance(value, str):
            text = value
        else:
            text = (value if isinstance(value, str) else go_json(value)) + "\n"
            if not self.ends_with_newline:
                text = "\n" + text
        with self.lock:
            self.out.write(text)
            self.out.flush()
            if text:
                self.ends_with_newline = text.endswith("\n")

    def finish(self) -> None:
        with self.lock:
            if not self.ends_with_newline:
                self.out.write("\n")
            self.out.flush()


# --------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------

def _stderr_log(source: str, data: str) -> None:
    sys.stderr.write(data)
    sys.stderr.flush()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _apply_env(pairs: Sequence[str]) -> None:
    """``-e NAME=VALUE`` (Cog passes them to ``docker run -e``): set for the worker.  ``-e NAME``
    alone passes the current value, as docker does, which the worker inherits anyway."""
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not name:
            raise CliError(f"invalid environment variable: {pair}")
        if sep:
            os.environ[name] = value


def _project(args: argparse.Namespace, mode: str) -> Tuple[Optional[str], str]:
    """(predictor reference or None, project folder) from REF / --predictor / -f."""
    explicit = getattr(args, "predictor", None) or getattr(args, "ref", None)
    if explicit and "=" in explicit and not os.path.exists(explicit.split(":", 1)[0]):
        # Cog's check for `cog predict prompt=hi` (the image argument, -i forgotten).
        raise CliError(f"Invalid predictor reference '{explicit}'. Did you forget `-i`?")
    config_name = getattr(args, "file", None)
    if not config_name:
        from .loader import choose_predictor

        # Also refuses a cog.yaml Cog would refuse, before anything starts.
        choice = choose_predictor(explicit, mode=mode, cwd=os.getcwd(), environ=os.environ)
        if choice.source == "default":  # said always: stderr is the log here, stdout the output
            print(f"minicog: {choice.notes[-1]}", file=sys.stderr, flush=True)
        return choice.ref, os.getcwd()
    from .config import load_cog_yaml
    from .loader import parse_ref

    path = _find_config(config_name)
    try:
        config = load_cog_yaml(path)
    except errors.ConfigError as exc:
        raise CliError(str(exc)) from None
    for key, value in config.environment.items():
        os.environ.setdefault(key, value)  # -e and the caller's environment win, as docker run -e
    if explicit:
        return explicit, config.directory
    ref = config.train if mode == "train" else config.predict
    if not ref:
        key = "train" if mode == "train" else "run"
        raise CliError(f"{path} names no predictor: add '{key}: predict.py:Runner' to it")
    rel, name = parse_ref(ref)
    return os.path.join(config.directory, rel) + (f":{name}" if name else ""), config.directory


def _find_config(name: str) -> str:
    """Cog's ``GetProjectDir``: *name* in the current folder or the nearest parent that has it."""
    start = os.getcwd()
    if os.path.isabs(name):
        if os.path.isfile(name):
            return name
        raise CliError(f"{name} not found")
    folder = start
    for _ in range(100):  # Cog's maxSearchDepth
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    raise CliError(f"{name} not found in {start} (or in any parent directories)")


def _prepare_inputs(args: argparse.Namespace, grouped: Dict[str, List[str]], json_inputs: Optional[Dict[str, Any]],
                    doc: Optional[dict], mode: str) -> Dict[str, Any]:
    """Cog's ``prepareInputs``: names first, then files, then values; Cog's messages."""
    component = input_component(doc, mode)
    if json_inputs is not None:
        values = dict(json_inputs)
        if component is not None and set(values) == {"input"} and "input" not in component["properties"] \
                and isinstance(values["input"], dict):
            values = values["input"]  # the HTTP request's shape, {"input": {...}}, is accepted too
        if component is None:
            return values
        check_input_names(list(values), component)
        values = json_file_inputs(values, doc, component)
    else:
        if component is None:
            return coerce_inputs(grouped, doc, None)
        check_input_names(list(grouped), component)
        values = coerce_inputs(grouped, doc, component)
    check_inputs(values, doc, component)
    return values


def _validation_message(command: str, detail: List[dict]) -> str:
    """Cog's ``buildInputValidationErrorMessage`` for a 422 from the model's own validation."""
    lines = []
    for d in detail:
        loc = [str(p) for p in (d.get("loc") or [])[2:]]
        lines.append(f"- {'.'.join(loc) or 'input'}: {d.get('msg')}")
    return ("The inputs you passed could not be validated:\n\n" + "\n".join(lines) +
            f"\n\nYou can provide an input with -i. For example:\n\n    minicog {command} -i blur=3.5\n\n"
            "If your input is a local file, you need to prefix the path with @ to tell Cog to read the file "
            f"contents. For example:\n\n    minicog {command} -i path=@image.jpg")


def _take_ctrl_c() -> None:
    """Make SIGINT raise KeyboardInterrupt even when the command started with it ignored.

    A shell without job control starts ``cmd &`` with SIGINT ignored, an ignored signal
    stays ignored across exec, and Python then installs no handler: ``kill -INT`` would
    neither cancel the prediction nor stop the command.  Cog's CLI (Go's signal.Notify)
    and ``minicog serve`` take SIGINT whatever they inherited; so does this.
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C's KeyboardInterrupt is (see :func:`sigterm_interrupts`)."""


class _SigtermLatch:
    """The SIGTERM handler: raises :class:`Terminated` once, while armed; later ones are ignored."""

    def __init__(self) -> None:
        self.armed = True

    def __call__(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed = False
            raise Terminated()

    def disarm(self) -> None:
        """From now on SIGTERM is ignored (the command is stopping already)."""
        self.armed = False


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[_SigtermLatch]:
    """While the body runs, the first SIGTERM raises :class:`Terminated` and later ones are ignored.

    SIGTERM's default action ends the process at once: the worker would outlive it
    for a moment and the engine's temporary folder would stay behind.  Raised as an
    exception, it unwinds through the ``finally`` that stops the worker and removes
    the folder.  Only on the main thread, and only when SIGTERM had its default
    action (a program that calls :func:`run_command` keeps its own handler); the
    default action is back when the body ends.
    """
    latch = _SigtermLatch()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        latch.disarm()
        yield latch
        return
    signal.signal(signal.SIGTERM, latch)
    try:
        yield latch
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_command(args: argparse.Namespace, mode: str) -> int:
    """``predict``/``run`` (mode "predict") or ``train``: returns the exit status."""
    from .embed import Model
    from .settings import Settings

    _take_ctrl_c()

    json_mode = args.json is not None
    # Everything that can be checked without the model is checked before it starts
    # (cmdPredict's order: flags, then the inputs' syntax, then the output path).
    if json_mode and args.input:
        raise CliError("Must use one of --json or --input to provide model inputs")
    grouped = parse_input_flags(args.input)
    json_inputs = read_json_inputs(args.json, sys.stdin) if json_mode else None
    _apply_env(args.env)
    ref, cwd = _project(args, mode)
    context: Dict[str, str] = {}
    if getattr(args, "use_replicate_token", False):
        token = os.environ.get("REPLICATE_API_TOKEN", "")
        if not token:
            raise CliError("Failed to find REPLICATE_API_TOKEN in the current environment when called with "
                           "--use-replicate-token")
        context["replicate_api_token"] = token

    # runPrediction's paths: -o (train: "weights" by default), else "output" / "output.json".
    explicit_output = args.output
    if mode == "train" and not explicit_output and not json_mode:
        explicit_output = "weights"
    fallback = "output.json" if json_mode else "output"
    output_path = ensure_output_writable(explicit_output, fallback)
    if json_mode and explicit_output and not output_path.endswith(".json"):
        print(f"--output value does not have a .json suffix: {os.path.basename(output_path)}", file=sys.stderr)
    if args.output_dir and not args.output:
        os.makedirs(args.output_dir, exist_ok=True)
        files_path = os.path.join(args.output_dir, "output")
    else:
        files_path = _trim_ext(output_path) if json_mode else output_path

    settings = Settings.from_env(**({"max_concurrency": args.max_concurrency} if args.max_concurrency else {}))
    timeout = args.setup_timeout if args.setup_timeout else None
    model = Model(ref, mode=mode, settings=settings, max_concurrency=args.max_concurrency, cwd=cwd,
                  setup_timeout=timeout, on_setup_log=_stderr_log)
    handle = None
    with sigterm_interrupts() as sigterm:
        try:
            model.start(wait=False)
            # The schema arrives before setup() runs: a typo fails now, not after setup.
            doc = model.wait_schema(timeout)
            inputs = _prepare_inputs(args, grouped, json_inputs, doc, mode) if doc is not None else None
            try:
                model.wait_ready()
            except errors.LoadError as exc:
                raise CliError(getattr(exc, "error", None) or str(exc)) from None
            if inputs is None:  # no schema before setup: Cog validates against the runtime schema
                inputs = _prepare_inputs(args, grouped, json_inputs, model.schema, mode)

            out_schema = output_schema(model.schema, mode)
            iterator = bool(out_schema) and out_schema.get("x-cog-array-type") == "iterator"
            live = None
            if iterator and not json_mode and (args.stream or (args.stream is None and sys.stdout.isatty())):
                live = LivePrinter(sys.stdout, concatenate=out_schema.get("x-cog-array-display") == "concatenate")
            print("Running training..." if mode == "train" else "Running prediction...", file=sys.stderr)
            print("", file=sys.stderr, flush=True)
            created_at = _now()
            try:
                handle = model.submit_input(inputs, on_log=_stderr_log, on_item=live.item if live else None,
                                            context=context or None)
            except errors.InputValidationError as exc:
                raise CliError(_validation_message(args.command, exc.detail)) from None
            handle.wait()
            if live is not None:
                live.finish()
            return _report(handle, args, mode, out_schema, created_at, output_path, files_path,
                           explicit_output, json_mode, live is not None)
        except KeyboardInterrupt as exc:
            # Ignore further Ctrl-C and SIGTERM while we cancel and stop cleanly (bounded waits).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            sigterm.disarm()
            code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
            what = "Terminated" if code == EXIT_TERMINATED else "Interrupted"
            if handle is None:  # during setup or input checks: nothing to cancel, the worker is stopped below
                print(f"\n{what}", file=sys.stderr, flush=True)
                return code
            print(f"\n{what}: canceling the prediction...", file=sys.stderr, flush=True)
            if not handle.done():
                handle.cancel()
                if handle.wait(settings.cancel_grace_period + 5.0):
                    print(f"prediction {handle.status}", file=sys.stderr, flush=True)
            return code
        finally:
            sigterm.disarm()  # a SIGTERM now must not cut the cleanup short
            model.close()


def _report(handle: Any, args: argparse.Namespace, mode: str, out_schema: Optional[dict], created_at: str,
            output_path: str, files_path: str, explicit_output: Optional[str], json_mode: bool,
            printed_live: bool) -> int:
    """The end of Cog's ``runPrediction``: files written, then the output or the prediction object."""
    status = handle.status
    output = handle.output if status == "succeeded" else None
    wrote_files = False
    if status == "succeeded" and output is not None:
        try:
            written = process_file_outputs(output, out_schema, files_path)
        except OSError as exc:
            raise CliError(f"Failed to write output: {exc.strerror or exc}") from None
        wrote_files, output = written is not output, written  # a new value only when files were written

    if json_mode:
        metrics = dict(handle.metrics)
        if handle.started_at and handle.completed_at:
            started = datetime.datetime.fromisoformat(handle.started_at)
            completed = datetime.datetime.fromisoformat(handle.completed_at)
            metrics.setdefault("predict_time", (completed - started).total_seconds())
        # Cog's predict.Response fields first, in its order (metrics omitted when empty);
        # then what minicog's record adds (id, logs, timestamps).
        record: Dict[str, Any] = {"status": status, "output": output, "error": handle.error or ""}
        if metrics:
            record["metrics"] = metrics
        record.update(id=handle.id, logs=handle.logs, created_at=created_at, started_at=handle.started_at,
                      completed_at=handle.completed_at)
        text = "{\n" + ",\n".join(f"  {_go_string(k)}: {go_json(v, _level=1)}" for k, v in record.items()) + "\n}"
        if args.output:
            _write_text(output_path, text)
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        return EXIT_OK if status == "succeeded" else EXIT_FAILED

    if status != "succeeded":
        raise CliError(f"Prediction failed with status {_q(status)}: {handle.error or ''}")
    if output is None:
        print("No output generated", file=sys.stderr)
        return EXIT_OK
    if printed_live:
        return EXIT_OK
    schema = out_schema or {}
    if wrote_files:
        return EXIT_OK  # a file or a list of files: each was announced as it was written
    if schema.get("type") == "string" or (not schema and isinstance(output, str)):
        text = output if isinstance(output, str) else go_json(output)
    else:
        text = go_json(output)
    if explicit_output:
        _write_text(output_path, text)
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return EXIT_OK


def _write_text(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise CliError(f"Failed to write output: open {path}: {(exc.strerror or str(exc)).lower()}") from None
    _written(path)
