"""The command line: ``python -m minicog`` (or the ``minicog`` console script).

Subcommands::

    serve    Cog's HTTP API for a predictor (coglet's ``python -m cog.server.http``)
    predict  run one prediction and print / write its output (``cog predict``)
    train    the same for a train reference (``cog train``)
    schema   print the predictor's OpenAPI document
    bundle   write minicog as one executable file (minicog.pyz) for images without pip

Every subcommand names its predictor the same way: ``--predictor REF`` (``serve``
also takes REF as its first positional argument); without it, ``cog.yaml`` in
the current folder, then ``COG_PREDICT_TYPE_STUB`` / ``COG_TRAIN_TYPE_STUB``,
then minicog's embedded default model (:mod:`minicog.models`).

``predict`` / ``train`` design:

* The parent never imports user code, so inputs given as ``-i NAME=VALUE`` are
  parsed *after* the worker has set up and sent its schema: each VALUE is read
  as the input's schema type (``integer``, ``number``, ``boolean``, lists by
  repeating ``-i``, JSON for objects), and values that do not parse are passed
  on as text so that validation reports every problem at once, each on its
  own line naming the input, with exit status 2.
* ``@path`` for a file input (``format: uri``) reads the local file and sends
  it as a ``data:`` URI, so the worker handles it exactly like an HTTP client's
  upload (a plain path to an existing file works too; anything else that is not
  a URL is a usage error naming the input); http(s) and data: URLs are passed
  through for the worker to fetch.
* Logs (setup and prediction) go to stderr as they are produced; stdout carries
  only the output, so ``minicog predict ... > out.txt`` captures just that.
  A string is printed as is, anything else as indented JSON; iterator outputs
  are printed item by item as they arrive (``ConcatenateIterator`` items with no
  separator, others one per line).  File outputs are written to
  ``output.<ext>`` (``output.<i>.<ext>`` for lists and iterators) in
  ``--output-dir`` (default: the current folder), or to ``-o PATH``; the path
  written is printed in place of the file.
* Exit status: 0 success, 1 the prediction (or setup) failed, 2 usage or input
  errors, 130 interrupted: Ctrl-C cancels the running prediction, waits for the
  worker to confirm (bounded by ``Settings.cancel_grace_period``) and stops it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from . import errors
from ._version import COG_VERSION, __version__
from .settings import Settings

__all__ = ["main", "build_parser", "parse_input_value", "build_inputs", "collect_inputs",
           "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("minicog.cli")

_REF_PREFIX = "#/components/schemas/"


class UsageError(Exception):
    """A problem with the command line itself; printed as one line per problem, exit 2."""

    def __init__(self, *problems: str):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


# --------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------

def _env_help() -> str:
    names = Settings.environment_variables()
    lines = ["environment variables (see minicog/settings.py for units and defaults):"]
    for env, field in sorted(names.items()):
        lines.append(f"  {env:<32} {field}")
    lines.append(f"  {'COG_PREDICT_TYPE_STUB':<32} predictor reference when none is given (predict mode)")
    lines.append(f"  {'COG_TRAIN_TYPE_STUB':<32} predictor reference when none is given (train mode)")
    return "\n".join(lines)


def _bool_arg(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _workers_arg(text: str) -> str:
    value = text.strip().lower()
    if value != "auto" and not (value.isdigit() and int(value) >= 1):
        raise argparse.ArgumentTypeError(f"expected a number of at least 1 or 'auto', got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {value}")
    return value


_REF_HELP = ("predictor reference, path/to/file.py[:Name] (default: cog.yaml in the current folder, then "
             "COG_PREDICT_TYPE_STUB / COG_TRAIN_TYPE_STUB, then minicog's embedded default model)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every subcommand (exposed for the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="minicog",
        description="Serve and run models written for Replicate's Cog (predict.py / run.py) "
                    "with coglet's HTTP API, using only the Python standard library.",
        epilog="Run 'minicog COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version",
                        version=f"minicog {__version__} (Cog {COG_VERSION} API)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # serve ------------------------------------------------------------------------------
    serve = sub.add_parser(
        "serve", help="serve a predictor over Cog's HTTP API",
        description="Serve a predictor over Cog's HTTP API (the routes of coglet 0.23.1: /predictions, "
                    "/trainings, /health-check, /openapi.json, /shutdown, SSE and webhooks).",
        epilog=_env_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("ref", nargs="?", metavar="REF", help=_REF_HELP)
    serve.add_argument("--predictor", metavar="REF", help="the same as REF (takes precedence)")
    serve.add_argument("--host", default=None,
                       help="address to listen on (default: $HOST, else 127.0.0.1, reachable from this machine "
                            "only; 0.0.0.0 listens on every interface, as a container needs)")
    serve.add_argument("--port", type=_port, default=None,
                       help="TCP port to listen on (default: $PORT, else 5000; 0 picks a free port)")
    serve.add_argument("--upload-url", metavar="URL", default=None,
                       help="PUT file outputs to URL/<name> and answer with the uploaded URL "
                            "instead of a data: URI")
    serve.add_argument("--await-explicit-shutdown", nargs="?", const=True, default=False, type=_bool_arg,
                       metavar="true|false",
                       help="ignore SIGTERM; stop only on POST /shutdown or SIGINT (bare flag means true)")
    serve.add_argument("--x-mode", choices=("predict", "train"), default="predict",
                       help="predict (default): every route calls run()/predict(); train: every route calls train()")
    serve.add_argument("--max-concurrency", type=_positive_int, default=None, metavar="N",
                       help="number of predictions run at once (overrides COG_MAX_CONCURRENCY, "
                            "cog.yaml concurrency.max and @concurrent)")
    serve.add_argument("--workers", type=_workers_arg, default=None, metavar="N|auto",
                       help="worker processes, each with its own slots (default: $MINICOG_WORKERS, else 1); "
                            "auto: one per device listed in CUDA_VISIBLE_DEVICES when it lists several, "
                            "else one per CPU core")
    serve.add_argument("--gpus", default=None, metavar="LIST",
                       help="comma-separated devices, e.g. 0,1: one worker per device (or round robin "
                            "over --workers), each seeing only its own through CUDA_VISIBLE_DEVICES")
    serve.add_argument("--log-format", choices=("text", "json"), default="text",
                       help="text (default) or one JSON object per line on stderr")

    # predict / train ----------------------------------------------------------------------
    for name, what in (("predict", "prediction"), ("train", "training")):
        p = sub.add_parser(
            name, help=f"run one {what} and print its output",
            description=f"Start the predictor's worker, run one {what}, print the output to stdout "
                        f"(logs go to stderr) and write file outputs to disk.",
            epilog=_PREDICT_EPILOG.format(cmd=name), formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--predictor", metavar="REF", help=_REF_HELP)
        p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=VALUE",
                       help="an input; VALUE is read as the input's type; repeat for list inputs; "
                            "@path sends a local file to a file input")
        p.add_argument("--json", metavar="JSON|@FILE|-", default=None,
                       help="all inputs as one JSON object: inline, @FILE to read a file, - to read stdin "
                            "(-i values override its keys)")
        p.add_argument("-o", "--output", metavar="PATH", default=None,
                       help="where to write a file output (lists: PATH with .<i> before the extension)")
        p.add_argument("--output-dir", metavar="DIR", default=None,
                       help="folder for file outputs named output.<ext> / output.<i>.<ext> (default: .)")
        p.add_argument("--max-concurrency", type=_positive_int, default=None, help=argparse.SUPPRESS)

    # schema -----------------------------------------------------------------------------
    s = sub.add_parser("schema", help="print the predictor's OpenAPI document",
                       description="Start the predictor's worker (which runs setup()) and print the OpenAPI "
                                   "document it builds from the predictor's signature.")
    s.add_argument("--predictor", metavar="REF", help=_REF_HELP)
    s.add_argument("--x-mode", choices=("predict", "train"), default="predict",
                   help="predict (default) or train: which reference to resolve when --predictor is not given")

    # bundle -----------------------------------------------------------------------------
    b = sub.add_parser("bundle", help="write minicog as one executable file (minicog.pyz)",
                       description="Write minicog as one executable zip file: 'python3 -I -S minicog.pyz serve "
                                   "--predictor predict.py' then works where minicog is not installed "
                                   "(workers and the default model included).",
                       epilog=_BUNDLE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("-o", "--output", metavar="PATH", default="minicog.pyz",
                   help="the file to write (default: minicog.pyz)")
    b.add_argument("--python", metavar="INTERPRETER", default=None,
                   help="the #! line's interpreter (default: /usr/bin/env python3)")
    b.add_argument("--no-compile", action="store_true",
                   help="leave out the .pyc files (smaller; each start compiles the sources)")
    return parser


_BUNDLE_EPILOG = """\
examples:
  python -m minicog bundle -o minicog.pyz
  python3 -I -S minicog.pyz serve --predictor predict.py --port 5000
  python3 minicog.pyz predict --predictor predict.py -i text=hello
"""


_PREDICT_EPILOG = """\
examples:
  minicog {cmd} -i prompt="Hello there" -i max_tokens=20
  minicog {cmd} --predictor predict.py:Runner -i image=@photo.png -o result.png
  minicog {cmd} --json '{{"prompt": "Hi"}}'
  echo '{{"prompt": "Hi"}}' | minicog {cmd} --json -

exit status: 0 success, 1 failed, 2 usage or input error, 130 interrupted (Ctrl-C cancels).
"""


# --------------------------------------------------------------------------------------
# input parsing
# --------------------------------------------------------------------------------------

def _resolve(doc: dict, node: Any) -> dict:
    """Follow $ref / single allOf wrappers to the schema object that says the type."""
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
            merged = {**inner, **{k: v for k, v in merged.items() if k not in inner}}
            return merged
        return node
    return node


def _types_of(doc: dict, node: dict) -> List[str]:
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


def _is_file(doc: dict, node: dict) -> bool:
    node = _resolve(doc, node)
    if node.get("format") == "uri":
        return True
    return any(_is_file(doc, sub) for key in ("anyOf", "oneOf") for sub in node.get(key) or [])


def parse_input_value(text: str, node: Optional[dict], doc: Optional[dict] = None, *, name: str = "input") -> Any:
    """Read one ``-i`` VALUE as the JSON value its schema *node* expects.

    Text that does not parse as the expected type is returned unchanged so that
    the schema validation reports it with Cog's message.  ``@path`` for a file
    input becomes a ``data:`` URI (raises UsageError when the file is missing).
    """
    from . import files  # lazily: urllib.request & co. cost `serve` start-up time
    doc = doc or {}
    node = _resolve(doc, node or {})
    if _is_file(doc, node):
        if text.startswith("@"):
            return _file_to_data_uri(text[1:], name)
        if not files.is_url(text) and not (text == "null" and node.get("nullable")):
            # A bare local path is what people type; accept it when the file exists.
            if os.path.isfile(text):
                return _file_to_data_uri(text, name)
            raise UsageError(f"input '{name}': expected @path to a local file or an http(s)/data: URL, got {text!r}")
    types = _types_of(doc, node)
    if not types:  # no schema: best effort, JSON if it parses
        return _maybe_json(text)
    if text == "null" and (node.get("nullable") or "null" in types) and "string" not in types:
        return None
    # A string accepts any text, so it is tried last: `str | float` reads "1.5" as a
    # number, as Cog does, whatever order the union was written in.
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
    from .embed import to_input_value
    import pathlib

    if not os.path.isfile(path):
        raise UsageError(f"input '{name}': no such file: {path}")
    return to_input_value(pathlib.Path(path))


def _input_properties(doc: Optional[dict], component: str) -> Optional[dict]:
    schemas = ((doc or {}).get("components") or {}).get("schemas") or {}
    root = schemas.get(component)
    if root is None and component == "TrainingInput":
        root = schemas.get("Input")
    if not isinstance(root, dict):
        return None
    return root.get("properties") or {}


def read_json_inputs(spec: Optional[str], stdin: TextIO) -> Dict[str, Any]:
    """The ``--json`` object: inline JSON, ``@FILE`` or ``-`` (stdin); ``{"input": {...}}`` is unwrapped."""
    if spec is None:
        return {}
    if spec == "-":
        text = stdin.read()
        where = "stdin"
    elif spec.startswith("@"):
        try:
            with open(spec[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise UsageError(f"--json: cannot read {spec[1:]}: {exc.strerror or exc}") from None
        where = spec[1:]
    else:
        text, where = spec, "--json"
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--json: {where} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--json: expected a JSON object of inputs, got {type(value).__name__}")
    if set(value) == {"input"} and isinstance(value["input"], dict):
        value = value["input"]
    return value


def build_inputs(pairs: Sequence[str], json_inputs: Dict[str, Any], doc: Optional[dict], component: str) -> Dict[str, Any]:
    """Merge ``--json`` and ``-i`` into one input dict, parsing each VALUE by its schema type.

    Raises UsageError listing every problem found.
    """
    inputs, problems, _failed = collect_inputs(pairs, json_inputs, doc, component)
    if problems:
        raise UsageError(*problems)
    return inputs


def collect_inputs(pairs: Sequence[str], json_inputs: Dict[str, Any], doc: Optional[dict],
                   component: str) -> Tuple[Dict[str, Any], List[str], set]:
    """Like :func:`build_inputs` but never raises: ``(inputs, problems, failed names)``.

    The inputs that could be read are returned so that the caller can still run
    the schema validation on them and show *every* problem at once (an unknown
    input must not hide an out-of-range one).
    """
    props = _input_properties(doc, component)
    problems: List[str] = []
    failed: set = set()
    grouped: Dict[str, List[str]] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(f"-i {pair!r}: expected NAME=VALUE")
            continue
        grouped.setdefault(name, []).append(text)
    inputs = dict(json_inputs)
    for name, texts in grouped.items():
        if props is not None and name not in props:
            known = ", ".join(sorted(props)) or "none"
            problems.append(f"input '{name}': unknown input (this predictor takes: {known})")
            failed.add(name)
            inputs.pop(name, None)
            continue
        node = (props or {}).get(name) or {}
        resolved = _resolve(doc or {}, node)
        try:
            if "array" in _types_of(doc or {}, resolved) and resolved.get("items") is not None:
                items = resolved["items"]
                if len(texts) == 1 and texts[0].lstrip().startswith("[") and not _is_file(doc or {}, items):
                    parsed = _maybe_json(texts[0])
                    if isinstance(parsed, list):
                        inputs[name] = parsed
                        continue
                inputs[name] = [parse_input_value(t, items, doc, name=name) for t in texts]
            elif len(texts) > 1:
                problems.append(f"input '{name}': given {len(texts)} times but it takes one value")
                failed.add(name)
                inputs.pop(name, None)
            else:
                inputs[name] = parse_input_value(texts[0], node, doc, name=name)
        except UsageError as exc:
            problems.extend(exc.problems)
            failed.add(name)
            inputs.pop(name, None)
    return inputs, problems, failed


def format_validation_errors(detail: List[dict]) -> List[str]:
    """One line per problem of a Cog ``detail`` list, naming the input."""
    lines = []
    for d in detail:
        loc = [str(p) for p in (d.get("loc") or [])[2:]]
        where = f"input '{loc[0]}'" if loc else "input"
        if len(loc) > 1:
            where += f" (at {'/'.join(loc[1:])})"
        lines.append(f"{where}: {d.get('msg')}")
    return lines


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------

class OutputWriter:
    """Prints output items and writes file outputs as they arrive (called from the I/O thread).

    *array* tells whether the output is a list/iterator (files are numbered);
    *stream* whether items are printed as they arrive; *concatenate* whether
    streamed strings are joined without separators.
    """

    def __init__(self, out: TextIO, *, array: bool, stream: bool, concatenate: bool,
                 output: Optional[str], output_dir: Optional[str]):
        self.out = out
        self.array = array
        self.stream = stream
        self.concatenate = concatenate
        self.output = output
        self.output_dir = output_dir
        self.items: Dict[int, Any] = {}
        self.written: List[str] = []
        self.ends_with_newline = True
        self.lock = threading.Lock()
        self.error: Optional[BaseException] = None

    def item(self, index: int, value: Any) -> None:
        try:
            shown = self._store(index, value)
            with self.lock:
                self.items[index] = shown
                if self.stream:
                    self._print_item(shown)
        except Exception as exc:  # reported by the main thread; never kills the I/O thread
            self.error = exc

    def _store(self, index: int, value: Any) -> Any:
        from . import files  # lazily: urllib.request & co. cost `serve` start-up time
        import pathlib

        if isinstance(value, pathlib.Path):
            ext = value.suffix or files.guess_extension(files.guess_mime(value.name)) or ""
            target = self._target(str(index) if self.array else "", ext)
            shutil.copyfile(value, target)
            return self._written(target)
        return self._store_nested(value, [str(index)] if self.array else [])

    def _store_nested(self, value: Any, where: List[str]) -> Any:
        """Files nested in dicts/lists arrive as data: URIs (Cog's rule); write them out too."""
        from . import files  # lazily: urllib.request & co. cost `serve` start-up time
        if isinstance(value, dict):
            return {k: self._store_nested(v, where + [str(k)]) for k, v in value.items()}
        if isinstance(value, list):
            return [self._store_nested(v, where + [str(i)]) for i, v in enumerate(value)]
        if isinstance(value, str) and value.startswith("data:") and where and "," in value[:200]:
            try:
                mime, data = files.parse_data_uri(value)
            except errors.InputFetchError:
                return value
            ext = files.guess_extension(mime) or ""
            target = self._target(".".join(where), ext)
            with open(target, "wb") as f:
                f.write(data)
            return self._written(target)
        return value

    def _target(self, suffix: str, ext: str) -> str:
        """``output<ext>`` / ``output.<suffix><ext>`` in the output folder, or -o PATH likewise."""
        if self.output:
            stem, oext = os.path.splitext(self.output)
            target = f"{stem}.{suffix}{oext or ext}" if suffix else (self.output if oext else self.output + ext)
        else:
            name = f"output.{suffix}{ext}" if suffix else f"output{ext}"
            target = os.path.join(self.output_dir, name) if self.output_dir else name
        folder = os.path.dirname(target)
        if folder:
            os.makedirs(folder, exist_ok=True)
        return target

    def _written(self, target: str) -> str:
        print(f"Written output to {target}", file=sys.stderr, flush=True)
        self.written.append(target)
        return target

    def _print_item(self, value: Any) -> None:
        if self.concatenate and isinstance(value, str):
            text = value
        else:
            text = _show(value)
            if not self.ends_with_newline:
                text = "\n" + text
            text += "\n"
        self.out.write(text)
        self.out.flush()
        if text:
            self.ends_with_newline = text.endswith("\n")

    def finish(self, final: Any) -> None:
        """Print the whole output (non-stream) or end the streamed one with a newline."""
        with self.lock:
            if self.stream:
                if not self.ends_with_newline:
                    self.out.write("\n")
            else:
                ordered = [self.items[i] for i in sorted(self.items)]
                if not ordered:
                    value = final
                elif self.array or len(ordered) > 1:
                    value = ordered if not (len(ordered) == 1 and isinstance(ordered[0], list)) else ordered[0]
                else:
                    value = ordered[0]
                if value is not None or ordered:
                    self.out.write(_show(value) + "\n")
            self.out.flush()


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def _output_shape(doc: Optional[dict], mode: str) -> Tuple[bool, bool, bool]:
    """(array, iterator, concatenate) from the schema's Output component."""
    schemas = ((doc or {}).get("components") or {}).get("schemas") or {}
    out = schemas.get("TrainingOutput") if mode == "train" else None
    if not isinstance(out, dict):
        out = schemas.get("Output")
    out = _resolve(doc or {}, out) if isinstance(out, dict) else {}
    array = out.get("type") == "array"
    iterator = array and out.get("x-cog-array-type") == "iterator"
    concatenate = iterator and out.get("x-cog-array-display") == "concatenate"
    return array, iterator, concatenate


# --------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------

def _stderr_log(source: str, data: str) -> None:
    sys.stderr.write(data)
    sys.stderr.flush()


def _configure_logging(settings: Settings) -> None:
    """Logging for the one-shot commands: minicog's own chatter only from warnings up.

    The model's logs are what a user of ``predict`` wants on stderr; worker state
    changes are noise there.  Setting ``COG_LOG_LEVEL`` explicitly shows them.
    """
    name = settings.log_level.upper()
    name = "WARNING" if name == "WARN" else name
    level = getattr(logging, name, logging.INFO) if "COG_LOG_LEVEL" in os.environ else logging.WARNING
    logging.basicConfig(stream=sys.stderr, level=level, format="%(levelname)s %(name)s: %(message)s")


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with --max-concurrency (when given) above COG_MAX_CONCURRENCY."""
    flag = getattr(args, "max_concurrency", None)
    return Settings.from_env(**({"max_concurrency": flag} if flag else {}))


def _cmd_serve(args: argparse.Namespace) -> int:
    from .console import configure_logging
    from .engine import plan
    from .loader import choose_predictor

    settings = _settings(args)
    configure_logging(args.log_format, settings.log_level)
    explicit = args.predictor or args.ref
    # Chosen here so that a wrong cog.yaml or "nothing to serve" is a one-line error
    # before any start-up, and so the operator reads what is served and why; the plan
    # is the one the server and the embedding API use too (cog.yaml included).
    choice = choose_predictor(explicit, mode=args.x_mode, cwd=os.getcwd(), environ=os.environ)
    for note in choice.notes:
        log.info("%s", note)
    try:
        what = plan(choice.ref, mode=args.x_mode, cwd=os.getcwd(), settings=settings, workers=args.workers,
                    gpus=args.gpus)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # Spawn the workers first: their start-up (interpreter, model import, setup) is the
    # long pole of a cold start, and it runs while this process imports the HTTP server.
    engine = what.engine()
    engine.start()
    try:
        from .server.service import serve

        result = serve(what.ref, host=args.host, port=args.port, upload_url=args.upload_url,
                       await_explicit_shutdown=bool(args.await_explicit_shutdown), mode=args.x_mode,
                       log_format=args.log_format, settings=settings, cwd=what.cwd, orchestrator=engine)
    finally:
        engine.stop()  # idempotent; covers a failure before serve() took over
    return int(result or 0)


def _cmd_schema(args: argparse.Namespace) -> int:
    from .embed import Model

    settings = Settings.from_env()
    _configure_logging(settings)
    with Model(args.predictor, mode=args.x_mode, settings=settings, on_setup_log=_stderr_log) as model:
        sys.stdout.write(json.dumps(model.schema, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    return EXIT_OK


def _cmd_predict(args: argparse.Namespace, mode: str) -> int:
    from .embed import Model
    from .loader import choose_predictor

    # Everything that can be checked without the model is checked before it starts.
    for pair in args.input:
        if "=" not in pair or not pair.partition("=")[0].strip():
            raise UsageError(f"-i {pair!r}: expected NAME=VALUE")
    json_inputs = read_json_inputs(args.json, sys.stdin)
    settings = _settings(args)
    _configure_logging(settings)
    choice = choose_predictor(args.predictor, mode=mode, cwd=os.getcwd(), environ=os.environ)
    for note in choice.notes:  # cog.yaml's ignored keys: shown with COG_LOG_LEVEL=info
        log.info("%s", note)
    if choice.source == "default":
        # Always said (stderr is the log here; stdout stays the output alone).
        print(f"minicog: {choice.notes[-1]}", file=sys.stderr, flush=True)
    model = Model(choice.ref, mode=mode, settings=settings, max_concurrency=args.max_concurrency,
                  on_setup_log=_stderr_log)
    handle = None
    try:
        model.start()
        inputs, problems, failed = collect_inputs(args.input, json_inputs, model.schema, model.input_component)
        if problems:
            # Validate what could be read too, so every problem shows at once; an input
            # already reported (say "no such file") is not reported again as missing.
            try:
                model.validate(inputs)
            except errors.InputValidationError as exc:
                problems += format_validation_errors(
                    [d for d in exc.detail if not (len(d.get("loc") or []) > 2 and d["loc"][2] in failed)])
            raise UsageError(*problems)
        array, iterator, concatenate = _output_shape(model.schema, mode)
        writer = OutputWriter(sys.stdout, array=array, stream=iterator, concatenate=concatenate,
                              output=args.output, output_dir=args.output_dir)
        try:
            handle = model.submit_input(inputs, on_log=_stderr_log, on_item=writer.item)
        except errors.InputValidationError as exc:
            raise UsageError(*format_validation_errors(exc.detail)) from None
        try:
            output = handle.result()
        except errors.PredictionCanceled:
            print("error: the prediction was canceled", file=sys.stderr)
            return EXIT_FAILED
        except errors.PredictionError as exc:
            print(f"error: {handle.error or exc}", file=sys.stderr)
            return EXIT_FAILED
        if writer.error is not None:
            print(f"error: could not write the output: {writer.error}", file=sys.stderr)
            return EXIT_FAILED
        writer.finish(output)
        return EXIT_OK
    except KeyboardInterrupt:
        # Ignore further Ctrl-C while we cancel and stop cleanly (bounded waits).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if handle is None:  # during setup or input checks: nothing to cancel, the worker is stopped below
            print("\nInterrupted", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        print("\nInterrupted: canceling the prediction...", file=sys.stderr, flush=True)
        if not handle.done():
            handle.cancel()
            if handle.wait(settings.cancel_grace_period + 5.0):
                print(f"prediction {handle.status}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        model.close()


def _cmd_bundle(args: argparse.Namespace) -> int:
    from .bundle import DEFAULT_INTERPRETER, build_bundle

    try:
        count = build_bundle(args.output, interpreter=args.python or DEFAULT_INTERPRETER,
                             compile=not args.no_compile)
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    size = os.path.getsize(args.output)
    print(f"Wrote {args.output} ({count} files, {size / 1024:.0f} KiB); run it with: "
          f"python3 {args.output} serve --predictor predict.py", file=sys.stderr)
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_OK
    try:
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "schema":
            return _cmd_schema(args)
        if args.command == "bundle":
            return _cmd_bundle(args)
        return _cmd_predict(args, args.command)
    except UsageError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except (errors.ConfigError, errors.LoadError) as exc:
        # The setup logs were already shown on stderr as they were produced.
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except errors.MinicogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nInterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
