"""cog.yaml: a standard-library reader for the YAML that cog.yaml files use.

minicog cannot depend on PyYAML, and cog.yaml files use a small, regular part
of YAML, so this module reads exactly that part and refuses the rest loudly:

* block mappings and nested block mappings (indentation by spaces);
* block sequences (``- item``, ``- key: value`` items, and sequences written
  at the same indentation as their parent key, as cog.yaml files often do);
* flow sequences and mappings (``[a, "b", 1]``, ``{command: x}``), which may
  span lines until their bracket closes;
* scalars: plain, ``'single'`` and ``"double"`` quoted strings (with the
  usual escapes), integers (``10``, ``0x1f``, ``0o17``), floats (``1.5``,
  ``.inf``), booleans (``true``/``false``), null (``null``, ``~``, empty);
* ``#`` comments, ``---`` / ``...`` document markers;
* literal ``|`` and folded ``>`` block scalars (with ``-``/``+`` chomping).

Anchors, aliases, tags, multi-document files, tabs used for indentation,
complex keys and plain scalars continued over several lines raise
:class:`minicog.errors.ConfigError` naming the file and line; so does
anything else the reader does not understand.  A wrong guess would be worse
than an error: the file decides which code is imported.

Scalar typing follows YAML 1.2's core schema, as Cog's Go reader does (so
``yes`` is the string ``"yes"``, and ``python_version: 3.10`` is the float
3.1 - quote versions, as Cog's docs say).

:func:`load_cog_yaml` then applies Cog's rules for the keys minicog uses:
``run`` (the current name) or ``predict`` (deprecated; never both),
``train``, ``concurrency.max`` (an integer ≥ 1) and ``environment``
(``KEY=VALUE`` strings).  ``build``, ``image``, ``model`` and ``weights``
describe the Docker image Cog builds; minicog runs in the current Python
environment, so it records a note that they are ignored (logged at start-up).
Any other top-level key is an error naming its line, as Cog's schema refuses it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .errors import ConfigError

__all__ = ["CogConfig", "load_cog_yaml", "parse_yaml", "find_cog_yaml", "concurrency_from_cog_yaml"]


# ============================================================ the YAML subset


@dataclasses.dataclass
class _Line:
    number: int      # 1-based line number in the file
    indent: int      # columns of leading spaces
    text: str        # content without indentation, comment or trailing space
    raw: str         # the original line without its newline


_INT_RE = re.compile(r"[-+]?[0-9]+\Z")
_HEX_RE = re.compile(r"0x[0-9a-fA-F]+\Z")
_OCT_RE = re.compile(r"0o[0-7]+\Z")
_FLOAT_RE = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_ESCAPES = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
    "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85",
    "_": "\xa0", "L": "\u2028", "P": "\u2029",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class _Parser:
    def __init__(self, text: str, path: Optional[str]):
        self.path = path
        self.lines: List[_Line] = []
        self.raw_lines = text.splitlines()
        #: key path → line number, so semantic errors can name the line.
        self.key_lines: Dict[Tuple[Any, ...], int] = {}
        self._split_lines()
        self.pos = 0

    def error(self, message: str, line: Optional[int]) -> ConfigError:
        return ConfigError(message, path=self.path, line=line)

    # -------------------------------------------------------------- lines

    def _split_lines(self) -> None:
        seen_document = False
        for number, raw in enumerate(self.raw_lines, start=1):
            if raw.startswith("\ufeff") and number == 1:
                raw = raw[1:]
            stripped = raw.lstrip(" ")
            if stripped.startswith("\t") or (stripped and raw[: len(raw) - len(stripped)].count("\t")):
                raise self.error("tab characters cannot be used for indentation; use spaces", number)
            content = _strip_comment(stripped, lambda msg: self.error(msg, number))
            if not content:
                self.lines.append(_Line(number, len(raw) - len(stripped), "", raw))
                continue
            indent = len(raw) - len(stripped)
            if indent == 0 and (content == "---" or content.startswith("--- ")):
                if seen_document or any(l.text for l in self.lines):
                    raise self.error("only one YAML document is supported in cog.yaml", number)
                seen_document = True
                rest = content[3:].strip()
                if rest:
                    raise self.error("content after '---' is not supported; start it on the next line", number)
                self.lines.append(_Line(number, 0, "", raw))
                continue
            if indent == 0 and content == "...":
                # End of document: everything after must be blank/comments.
                for later, rest in enumerate(self.raw_lines[number:], start=number + 1):
                    if _strip_comment(rest.strip(), lambda msg: self.error(msg, later)):
                        raise self.error("only one YAML document is supported in cog.yaml", later)
                break
            if content.startswith("%"):
                raise self.error("YAML directives (%...) are not supported", number)
            self.lines.append(_Line(number, indent, content, raw))

    def _index_of(self, line: _Line) -> int:
        # Lines are kept in order, one per physical line, so this is cheap.
        for i in range(min(self.pos, len(self.lines) - 1), -1, -1):
            if self.lines[i] is line:
                return i
        return self.lines.index(line)

    def _next_content(self, start: int) -> int:
        i = start
        while i < len(self.lines) and not self.lines[i].text:
            i += 1
        return i

    # ------------------------------------------------------------ structure

    def parse_document(self) -> Any:
        i = self._next_content(0)
        if i >= len(self.lines):
            return None
        first = self.lines[i]
        self.pos = i
        value = self._parse_node(first.indent, ())
        j = self._next_content(self.pos)
        if j < len(self.lines):
            line = self.lines[j]
            raise self.error(f"unexpected content (check the indentation): {line.text!r}", line.number)
        return value

    def _parse_node(self, indent: int, keypath: Tuple[Any, ...]) -> Any:
        """Parse the block node whose first line is at ``self.pos`` with ``indent``."""
        line = self.lines[self.pos]
        if _is_seq_item(line.text):
            return self._parse_sequence(indent, keypath)
        if _find_mapping_colon(line.text) is not None:
            return self._parse_mapping(indent, keypath)
        # A lone scalar / flow node as the whole block.
        value, end = self._inline_value(line.text, line, keypath)
        self.pos = end
        return value

    def _parse_mapping(self, indent: int, keypath: Tuple[Any, ...], first_text: Optional[str] = None) -> Dict[Any, Any]:
        """Mapping at ``indent``; ``first_text`` overrides the first line's text
        (used for ``- key: value`` sequence items)."""
        result: Dict[Any, Any] = {}
        first = True
        while True:
            i = self._next_content(self.pos) if not (first and first_text is not None) else self.pos
            if i >= len(self.lines):
                break
            line = self.lines[i]
            text = first_text if (first and first_text is not None) else line.text
            if not first or first_text is None:
                if line.indent < indent:
                    break
                if line.indent > indent:
                    raise self.error(f"unexpected indentation: {line.text!r}", line.number)
                if _is_seq_item(text):
                    raise self.error(f"a list item cannot appear here, inside a mapping: {text!r}", line.number)
            first = False
            colon = _find_mapping_colon(text)
            if colon is None:
                raise self.error(f"expected 'key: value', found {text!r}", line.number)
            key = self._key(text[:colon].rstrip(), line)
            if key in result:
                raise self.error(f"duplicate key {key!r}", line.number)
            path = keypath + (key,)
            self.key_lines[path] = line.number
            rest = text[colon + 1:].strip()
            self.pos = i + 1
            result[key] = self._value_after_indicator(rest, line, indent, path, allow_same_indent_seq=True)
        return result

    def _parse_sequence(self, indent: int, keypath: Tuple[Any, ...]) -> List[Any]:
        result: List[Any] = []
        while True:
            i = self._next_content(self.pos)
            if i >= len(self.lines):
                break
            line = self.lines[i]
            if line.indent < indent:
                break
            if line.indent > indent:
                raise self.error(f"unexpected indentation: {line.text!r}", line.number)
            if not _is_seq_item(line.text):
                break
            path = keypath + (len(result),)
            self.key_lines[path] = line.number
            rest = line.text[1:]
            inner = rest.lstrip(" ")
            self.pos = i + 1
            if not inner:
                result.append(self._value_after_indicator("", line, indent, path, allow_same_indent_seq=False))
                continue
            item_indent = indent + 1 + (len(rest) - len(inner))
            if _is_seq_item(inner):
                # "- - a": a nested sequence starting on the same line.
                raise self.error("nested lists written on one line ('- - x') are not supported; use [x] or indent", line.number)
            if _find_mapping_colon(inner) is not None:
                # "- key: value": a mapping item whose keys align with "key".
                self.pos = i
                result.append(self._parse_mapping(item_indent, path, first_text=inner))
                continue
            result.append(self._value_after_indicator(inner, line, indent, path, allow_same_indent_seq=False))
        return result

    def _value_after_indicator(self, rest: str, line: _Line, indent: int, path: Tuple[Any, ...],
                               *, allow_same_indent_seq: bool) -> Any:
        """The value following ``key:`` or ``-`` whose text on the line is ``rest``."""
        if rest[:1] in ("|", ">"):
            return self._block_scalar(rest, line, indent)
        if rest:
            value, end = self._inline_value(rest, line, path)
            self.pos = max(self.pos, end)
            # A plain scalar continued on more-indented lines is valid YAML
            # but rare in cog.yaml; refuse rather than misread it.
            j = self._next_content(self.pos)
            if j < len(self.lines) and self.lines[j].indent > indent:
                nxt = self.lines[j]
                raise self.error(
                    f"unexpected indentation: {nxt.text!r} (a value continued over several lines "
                    "is not supported; quote it on one line or use a | block)", nxt.number)
            return value
        # Nothing on this line: the value is the nested block, if any.
        j = self._next_content(self.pos)
        if j < len(self.lines):
            nxt = self.lines[j]
            if nxt.indent > indent:
                self.pos = j
                return self._parse_node(nxt.indent, path)
            if allow_same_indent_seq and nxt.indent == indent and _is_seq_item(nxt.text):
                self.pos = j
                return self._parse_sequence(indent, path)
        return None

    def _block_scalar(self, header: str, line: _Line, indent: int) -> str:
        m = re.fullmatch(r"([|>])([-+]?)([1-9]?)([-+]?)", header)
        if not m or (m.group(2) and m.group(4)):
            raise self.error(f"unsupported block scalar header {header!r}", line.number)
        style, chomp, explicit = m.group(1), m.group(2) or m.group(4), m.group(3)
        # Block scalars are read from the raw lines: comments inside are text.
        raw_start = line.number  # index of the next raw line (0-based)
        body_indent: Optional[int] = indent + int(explicit) if explicit else None
        collected: List[str] = []
        k = raw_start
        while k < len(self.raw_lines):
            raw = self.raw_lines[k]
            if not raw.strip():
                collected.append("")
                k += 1
                continue
            lead = len(raw) - len(raw.lstrip(" "))
            if body_indent is None:
                if lead <= indent:
                    break
                body_indent = lead
            if lead < body_indent:
                break
            collected.append(raw[body_indent:])
            k += 1
        # Advance the structured cursor past the raw lines consumed.
        consumed_to = k  # raw line index (0-based) of the first line not consumed
        while self.pos < len(self.lines) and self.lines[self.pos].number <= consumed_to:
            self.pos += 1
        body = collected
        trailing = 0
        while body and body[-1] == "":
            body = body[:-1]
            trailing += 1
        if style == "|":
            text = "\n".join(body)
        else:
            text = _fold(body)
        if not body:
            return "" if chomp != "+" else "\n" * trailing
        if chomp == "-":
            return text
        if chomp == "+":
            return text + "\n" + "\n" * trailing
        return text + "\n"

    # ---------------------------------------------------------------- scalars

    def _key(self, text: str, line: _Line) -> Any:
        if not text:
            raise self.error("empty mapping key", line.number)
        if text.startswith("?"):
            raise self.error("complex mapping keys ('? ...') are not supported", line.number)
        value, end = self._flow_value(text, 0, line, in_flow=False)
        if text[end:].strip():
            raise self.error(f"cannot read the key {text!r}", line.number)
        if isinstance(value, (list, dict)):
            raise self.error("lists and mappings cannot be used as keys", line.number)
        return value

    def _inline_value(self, text: str, line: _Line, path: Tuple[Any, ...]) -> Tuple[Any, int]:
        """Value written on one line (or a flow collection spanning lines).

        Returns the value and the index in ``self.lines`` after the last line used.
        """
        line_index = self._index_of(line)
        if text[:1] in ("[", "{"):
            # Join continuation lines until the brackets balance.
            joined = text
            j = line_index
            while not _flow_closed(joined):
                j = self._next_content(j + 1)
                if j >= len(self.lines):
                    raise self.error(f"unclosed {text[0]!r}", line.number)
                joined += " " + self.lines[j].text
            value, end = self._flow_value(joined, 0, line, in_flow=True)
            if joined[end:].strip():
                raise self.error(f"unexpected text after the closing bracket: {joined[end:].strip()!r}", line.number)
            return value, j + 1
        value, end = self._flow_value(text, 0, line, in_flow=False)
        if text[end:].strip():
            raise self.error(f"cannot read the value {text!r}", line.number)
        return value, line_index + 1

    def _flow_value(self, text: str, i: int, line: _Line, *, in_flow: bool) -> Tuple[Any, int]:
        while i < len(text) and text[i] == " ":
            i += 1
        if i >= len(text):
            return None, i
        ch = text[i]
        if ch in "&*!":
            raise self.error("YAML anchors, aliases and tags (&, *, !) are not supported in cog.yaml", line.number)
        if ch == "?" and (i + 1 == len(text) or text[i + 1] == " "):
            raise self.error("complex mapping keys ('? ...') are not supported", line.number)
        if ch == "@" or ch == "`":
            raise self.error(f"a plain value cannot start with {ch!r}; quote it", line.number)
        if ch == '"':
            return self._double_quoted(text, i, line)
        if ch == "'":
            return self._single_quoted(text, i, line)
        if ch == "[" and in_flow:
            return self._flow_sequence(text, i, line)
        if ch == "{" and in_flow:
            return self._flow_mapping(text, i, line)
        if ch in "[{" and not in_flow:
            return self._flow_value(text, i, line, in_flow=True)
        # Plain scalar: up to end of line, or (in flow) up to , ] } or ": ".
        j = i
        while j < len(text):
            c = text[j]
            if in_flow and c in ",]}":
                break
            if c == ":" and (j + 1 == len(text) or text[j + 1] == " " or (in_flow and text[j + 1] in ",]}")):
                if in_flow:
                    break
            j += 1
        return _resolve_plain(text[i:j].rstrip()), j

    def _double_quoted(self, text: str, i: int, line: _Line) -> Tuple[str, int]:
        out = []
        j = i + 1
        while j < len(text):
            c = text[j]
            if c == '"':
                return "".join(out), j + 1
            if c == "\\":
                j += 1
                if j >= len(text):
                    break
                e = text[j]
                if e in _ESCAPES:
                    out.append(_ESCAPES[e])
                elif e in _HEX_ESCAPES:
                    digits = text[j + 1: j + 1 + _HEX_ESCAPES[e]]
                    if len(digits) != _HEX_ESCAPES[e] or not all(d in "0123456789abcdefABCDEF" for d in digits):
                        raise self.error(f"invalid escape \\{e}{digits}", line.number)
                    out.append(chr(int(digits, 16)))
                    j += len(digits)
                else:
                    raise self.error(f"invalid escape \\{e} in a double-quoted string", line.number)
            else:
                out.append(c)
            j += 1
        raise self.error("unterminated double-quoted string (strings must end on the same line)", line.number)

    def _single_quoted(self, text: str, i: int, line: _Line) -> Tuple[str, int]:
        out = []
        j = i + 1
        while j < len(text):
            c = text[j]
            if c == "'":
                if j + 1 < len(text) and text[j + 1] == "'":
                    out.append("'")
                    j += 2
                    continue
                return "".join(out), j + 1
            out.append(c)
            j += 1
        raise self.error("unterminated single-quoted string (strings must end on the same line)", line.number)

    def _flow_sequence(self, text: str, i: int, line: _Line) -> Tuple[List[Any], int]:
        items: List[Any] = []
        j = i + 1
        while True:
            j = _skip_spaces(text, j)
            if j >= len(text):
                raise self.error("unclosed '['", line.number)
            if text[j] == "]":
                return items, j + 1
            value, j = self._flow_value(text, j, line, in_flow=True)
            j = _skip_spaces(text, j)
            if j < len(text) and text[j] == ":":
                raise self.error("'key: value' pairs inside [...] are not supported", line.number)
            items.append(value)
            if j < len(text) and text[j] == ",":
                j += 1
            elif j < len(text) and text[j] == "]":
                return items, j + 1
            else:
                raise self.error("expected ',' or ']' in a [...] list", line.number)

    def _flow_mapping(self, text: str, i: int, line: _Line) -> Tuple[Dict[Any, Any], int]:
        result: Dict[Any, Any] = {}
        j = i + 1
        while True:
            j = _skip_spaces(text, j)
            if j >= len(text):
                raise self.error("unclosed '{'", line.number)
            if text[j] == "}":
                return result, j + 1
            key, j = self._flow_value(text, j, line, in_flow=True)
            if isinstance(key, (list, dict)):
                raise self.error("lists and mappings cannot be used as keys", line.number)
            j = _skip_spaces(text, j)
            value: Any = None
            if j < len(text) and text[j] == ":":
                value, j = self._flow_value(text, j + 1, line, in_flow=True)
                j = _skip_spaces(text, j)
            if key in result:
                raise self.error(f"duplicate key {key!r}", line.number)
            result[key] = value
            if j < len(text) and text[j] == ",":
                j += 1
            elif j < len(text) and text[j] == "}":
                return result, j + 1
            else:
                raise self.error("expected ',' or '}' in a {...} mapping", line.number)


def _skip_spaces(text: str, j: int) -> int:
    while j < len(text) and text[j] == " ":
        j += 1
    return j


def _outside_quotes(text: str, opens: Callable[[str, int], bool] = lambda text, i: True) -> Iterator[Tuple[int, str]]:
    """Yield ``(index, char)`` for the characters of *text* outside quoted scalars.

    ``opens(text, i)`` decides whether a quote character at *i* starts a quoted
    scalar (plain scalars may contain quotes: ``it's``).  The quotes themselves are
    not yielded; ``\\`` escapes in double quotes and ``''`` in single quotes are honoured.
    """
    quote: Optional[str] = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                if quote == "'" and text[i + 1:i + 2] == "'":
                    i += 2
                    continue
                quote = None
        elif c in ("'", '"') and opens(text, i):
            quote = c
        else:
            yield i, c
        i += 1


def _strip_comment(text: str, error: Any) -> str:
    """Remove a ``#`` comment (one at the start or after a space, outside quotes)."""
    for i, c in _outside_quotes(text, opens=lambda t, i: i == 0 or t[i - 1] in " [{,:-"):
        if c == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _flow_closed(text: str) -> bool:
    depth = 0
    for _, c in _outside_quotes(text):
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
    return depth <= 0


def _is_seq_item(text: str) -> bool:
    return text == "-" or text.startswith("- ")


def _find_mapping_colon(text: str) -> Optional[int]:
    """Index of the ``:`` that separates a block mapping key, or None."""
    if text[:1] in ("[", "{"):
        return None
    if text[:1] in ("'", '"'):
        quote = text[0]
        i = 1
        while i < len(text):
            if text[i] == "\\" and quote == '"':
                i += 2
                continue
            if text[i] == quote:
                if quote == "'" and i + 1 < len(text) and text[i + 1] == "'":
                    i += 2
                    continue
                break
            i += 1
        rest = text[i + 1:]
        k = len(rest) - len(rest.lstrip(" "))
        if rest[k:k + 1] == ":" and (len(rest) == k + 1 or rest[k + 1] == " "):
            return i + 1 + k
        return None
    for i, c in enumerate(text):
        if c == ":" and (i + 1 == len(text) or text[i + 1] == " "):
            return i
    return None


def _fold(lines: List[str]) -> str:
    """Folded (``>``) style: single newlines become spaces, blank lines newlines."""
    out = ""
    prev_blank = True
    for i, text in enumerate(lines):
        if text == "":
            out += "\n"
            prev_blank = True
            continue
        more_indented = text.startswith(" ")
        if i > 0 and not prev_blank and not more_indented and not out.endswith("\n"):
            out += " "
        elif i > 0 and (more_indented or prev_blank) and not out.endswith("\n") and out:
            out += "\n"
        out += text
        prev_blank = False
    return out


def _resolve_plain(text: str) -> Any:
    """YAML 1.2 core-schema typing of a plain scalar."""
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT_RE.match(text):
        return int(text, 10)
    if _HEX_RE.match(text):
        return int(text[2:], 16)
    if _OCT_RE.match(text):
        return int(text[2:], 8)
    if _FLOAT_RE.match(text) and any(c.isdigit() for c in text):
        return float(text)
    lower = text.lower()
    if lower in (".inf", "+.inf"):
        return float("inf")
    if lower == "-.inf":
        return float("-inf")
    if lower == ".nan":
        return float("nan")
    return text


def parse_yaml(text: str, *, path: Optional[str] = None) -> Any:
    """Parse ``text`` (the YAML subset described above) into Python values."""
    return _Parser(text, path).parse_document()


# ================================================================= cog.yaml

#: Top-level cog.yaml keys that only affect Cog's Docker build.
_BUILD_ONLY_KEYS = ("build", "image", "model", "weights")
_KNOWN_KEYS = ("build", "image", "model", "run", "predict", "train", "concurrency", "environment", "weights")


@dataclasses.dataclass
class CogConfig:
    """What minicog takes from a cog.yaml."""

    path: str
    #: ``run:`` or (deprecated) ``predict:`` - the predictor reference.
    predict: Optional[str] = None
    train: Optional[str] = None
    #: ``concurrency.max``; Cog lets it override ``@concurrent(max=...)``.
    concurrency_max: Optional[int] = None
    #: ``environment`` entries (``KEY=VALUE``), in file order.
    environment: Dict[str, str] = dataclasses.field(default_factory=dict)
    #: Human-readable remarks (ignored keys, deprecated spellings).
    notes: List[str] = dataclasses.field(default_factory=list)
    #: The whole parsed document.
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def directory(self) -> str:
        """The project directory; references in the file are relative to it."""
        return os.path.dirname(os.path.abspath(self.path))


def find_cog_yaml(directory: str) -> Optional[str]:
    """``<directory>/cog.yaml`` if it exists (Cog reads only that name)."""
    candidate = os.path.join(directory, "cog.yaml")
    return candidate if os.path.isfile(candidate) else None


def concurrency_from_cog_yaml(directory: str) -> Optional[int]:
    """``concurrency.max`` of ``<directory>/cog.yaml``, or None when there is no file or no key.

    Cog bakes this value into the image as ``COG_MAX_CONCURRENCY``, so it beats
    ``@concurrent(max=...)`` and loses to the environment variable; callers pass it
    to the engine as ``max_concurrency``, which has exactly that rank.
    """
    path = find_cog_yaml(directory)
    return load_cog_yaml(path).concurrency_max if path else None


def _ref(parser: _Parser, doc: Dict[str, Any], key: str, example: str, path: str) -> Optional[str]:
    value = doc.get(key)
    line = parser.key_lines.get((key,))
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be a string in the form '{example}'", path=path, line=line)
    if len(value.split(".py:")) != 2:
        raise ConfigError(f"{key}: must be in the form '{example}' (got {value!r})", path=path, line=line)
    return value


def load_cog_yaml(path: str) -> CogConfig:
    """Read ``path`` and apply Cog's rules for ``run``/``predict``/``train``/``concurrency``/``environment``."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError("file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot be read: {exc}", path=path) from None
    parser = _Parser(text, path)
    doc = parser.parse_document()
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError("the top level must be a mapping of keys such as 'run:' and 'build:'", path=path, line=1)
    config = CogConfig(path=path, raw=doc)

    run_ref = _ref(parser, doc, "run", "run.py:Runner", path)
    predict_ref = _ref(parser, doc, "predict", "predict.py:Predictor", path)
    if run_ref and predict_ref:
        raise ConfigError("only one of run or predict can be set", path=path, line=parser.key_lines.get(("predict",)))
    if predict_ref:
        config.notes.append("'predict:' is deprecated in Cog; use 'run:'")
    config.predict = run_ref or predict_ref
    config.train = _ref(parser, doc, "train", "train.py:Trainer", path)

    concurrency = doc.get("concurrency")
    if concurrency is not None:
        line = parser.key_lines.get(("concurrency",))
        if not isinstance(concurrency, dict):
            raise ConfigError("concurrency: must be a mapping with 'max'", path=path, line=line)
        maximum = concurrency.get("max")
        if maximum is not None:
            line = parser.key_lines.get(("concurrency", "max"), line)
            if isinstance(maximum, bool) or not isinstance(maximum, int):
                raise ConfigError(f"concurrency.max: must be an integer (got {maximum!r})", path=path, line=line)
            if maximum < 1:
                raise ConfigError(f"concurrency.max: must be at least 1 (got {maximum})", path=path, line=line)
            config.concurrency_max = maximum
            config.notes.append("'concurrency.max' is deprecated in Cog; use @concurrent(max=N) on an async run()")

    environment = doc.get("environment")
    if environment is not None:
        line = parser.key_lines.get(("environment",))
        if not isinstance(environment, list):
            raise ConfigError("environment: must be a list of KEY=VALUE strings", path=path, line=line)
        for index, entry in enumerate(environment):
            entry_line = parser.key_lines.get(("environment", index), line)
            if not isinstance(entry, str) or "=" not in entry or not entry.split("=", 1)[0]:
                raise ConfigError(f"environment variable {entry!r} is not in the KEY=VALUE format", path=path, line=entry_line)
            name, value = entry.split("=", 1)
            if name in config.environment:
                raise ConfigError(f"environment variable {name!r} is already defined", path=path, line=entry_line)
            config.environment[name] = value

    for key in doc:
        if key in _BUILD_ONLY_KEYS:
            config.notes.append(f"{key}.* is ignored by minicog (it describes Cog's Docker image; "
                                "minicog runs in the current Python environment)" if key == "build"
                                else f"'{key}' is ignored by minicog")
        elif key not in _KNOWN_KEYS:
            # Cog's schema has additionalProperties: false, so Cog refuses the file; a
            # typo such as 'predictor:' must not leave minicog serving something else.
            close = difflib.get_close_matches(str(key), _KNOWN_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown top-level key '{key}'{hint}; Cog refuses it. The keys cog.yaml may have "
                              f"are: {', '.join(sorted(_KNOWN_KEYS))}", path=path, line=parser.key_lines.get((key,)))
    return config
