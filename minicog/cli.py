"""The command line: ``python -m minicog`` (or the ``minicog`` console script).

Subcommands::

    serve    Cog's HTTP API for a predictor (coglet's ``python -m cog.server.http``)
    predict  run one prediction and print / write its output (``cog predict``)
    run      the same as predict (Cog's new name for it)
    train    the same for a train reference (``cog train``)
    schema   print the predictor's OpenAPI document
    bundle   write minicog as one executable file (minicog.pyz) for images without pip

Every subcommand names its predictor the same way: ``--predictor REF`` (or REF
as the first positional argument, where Cog takes an image); without it,
``cog.yaml`` in the current folder (``-f FILE`` for another one), then
``COG_PREDICT_TYPE_STUB`` / ``COG_TRAIN_TYPE_STUB``, then minicog's embedded
default model (:mod:`minicog.models`).

``predict`` / ``run`` / ``train`` follow Cog's CLI contract (flags, messages,
files written, exit status 0/1, 130 after Ctrl-C); they live in
:mod:`minicog.oneshot`.  A flag they do not know is reported under their usage
line with pflag's ``unknown flag: --x`` and exit status 1, as ``cog`` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, NoReturn, Optional, Sequence

from . import errors
from ._version import COG_VERSION, __version__
from .settings import CLI_SETUP_TIMEOUT, Settings

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

EXIT_OK = 0
EXIT_FAILED = 1
#: argparse's status for a bad ``serve``/``schema`` command line (coglet's server uses argparse too).
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: SIGTERM during ``predict``/``run``/``train``/``schema``: the worker is stopped first.
EXIT_TERMINATED = 143

log = logging.getLogger("minicog.cli")

#: The subcommands with Cog's CLI contract (minicog.oneshot).
_ONESHOT = ("predict", "run", "train")


class UsageError(Exception):
    """A problem with a ``serve``/``schema`` command line; printed as one line per problem, exit 2."""

    def __init__(self, *problems: str):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class _Parser(argparse.ArgumentParser):
    """argparse with the exit status a subcommand asks for (Cog's commands exit 1 on bad flags)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        status = getattr(self, "usage_exit_status", EXIT_USAGE)
        self.exit(status, f"{message}\n" if status != EXIT_USAGE else f"{self.prog}: error: {message}\n")


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


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
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
    parser = _Parser(
        prog="minicog",
        description="Serve and run models written for Replicate's Cog (predict.py / run.py) "
                    "with coglet's HTTP API, using only the Python standard library.",
        epilog="Run 'minicog COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version",
                        version=f"minicog {__version__} (Cog {COG_VERSION} API)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

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
    serve.add_argument("--no-docs", action="store_true",
                       help="do not serve the browser page at /docs (as MINICOG_DOCS=0)")

    # predict / run / train -----------------------------------------------------------------
    for name, what in (("predict", "prediction"), ("run", "prediction"), ("train", "training")):
        p = sub.add_parser(
            name, help=f"run one {what} and print its output" + (" (the same as predict: Cog's new name)"
                                                                   if name == "run" else ""),
            usage="%(prog)s [REF] [flags]",
            description=f"Start the predictor's worker, run one {what}, print the output to stdout "
                        f"(logs go to stderr) and write file outputs to disk: the flags, messages, files and "
                        f"exit status of 'cog {name}'.",
            epilog=_PREDICT_EPILOG.format(cmd=name, weights=_TRAIN_NOTE if name == "train" else ""),
            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
        p.usage_exit_status = 1  # type: ignore[attr-defined]  # Cog exits 1 on bad flags too
        p.add_argument("ref", nargs="?", metavar="REF",
                       help=_REF_HELP + "; Cog takes a Docker image here")
        p.add_argument("--predictor", metavar="REF", help="the same as REF (takes precedence)")
        p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=VALUE",
                       help="an input; VALUE is read as the input's type (\"quotes\" are removed); repeat a "
                            "name for a list; @path sends a local file to a file input")
        p.add_argument("--json", metavar="JSON|@FILE|@-", default=None,
                       help="all inputs as one JSON object: inline, @FILE, or @- (or -) for stdin; prints the "
                            "whole prediction as JSON (not with -i)")
        p.add_argument("-o", "--output", metavar="PATH", default=None,
                       help="write the output to PATH (a folder gets output.<ext>; lists get PATH.<i>.<ext>)"
                            + ("; default: weights" if name == "train" else ""))
        p.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                       help="environment variable for the model (repeatable)")
        p.add_argument("-f", "--file", metavar="FILE", default=None,
                       help="the cog.yaml to read (searched for in the current folder and its parents); "
                            "default: cog.yaml in the current folder")
        p.add_argument("--setup-timeout", type=_seconds, default=CLI_SETUP_TIMEOUT, metavar="SECONDS",
                       help=f"give up if setup() takes longer (default {CLI_SETUP_TIMEOUT}; 0: no limit)")
        p.add_argument("--use-replicate-token", action="store_true",
                       help="pass REPLICATE_API_TOKEN from the environment into the model's context")
        p.add_argument("--stream", action="store_true", default=None,
                       help="print iterator outputs item by item as they arrive (the default when stdout is "
                            "a terminal); without it a script gets Cog's format")
        p.add_argument("--no-stream", action="store_false", dest="stream",
                       help="print iterator outputs once the prediction ends, even on a terminal")
        p.add_argument("--output-dir", metavar="DIR", default=None,
                       help="folder for file outputs (output.<ext>) when -o is not given (default: .)")
        p.add_argument("--max-concurrency", type=_positive_int, default=None, help=argparse.SUPPRESS)
        # Cog's flags about building and running its Docker image: accepted so that
        # scripts keep working, and ignored (minicog runs in this Python environment).
        for flag in ("--gpus", "--progress", "--use-cuda-base-image", "--dockerfile"):
            p.add_argument(flag, metavar="VALUE", help=argparse.SUPPRESS)
        for flag in ("--use-cog-base-image", "--debug", "--no-color", "--profile"):
            p.add_argument(flag, nargs="?", const="true", metavar="BOOL", help=argparse.SUPPRESS)

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


_TRAIN_NOTE = """
A file output is written to weights.<ext> (Cog's default -o for train); any other
output is written to the file 'weights'.
"""

_PREDICT_EPILOG = """\
examples:
  minicog {cmd} -i prompt="a photo of a cat"
  minicog {cmd} -i image=@photo.jpg -o output.png
  minicog {cmd} predict.py:Runner -i prompt="sunset" -i width=1024 -i height=768
  echo '{{"prompt": "a cat"}}' | minicog {cmd} --json @-
{weights}
output: a string is printed as is, anything else as indented JSON; iterators once the
prediction ends (item by item only on a terminal or with --stream). File outputs go to
output.<ext> (lists: output.<i>.<ext>), or -o PATH; 'Written output to: PATH' on stderr.

inputs are checked against the schema before setup() runs, with Cog's messages.

exit status: 0 success; 1 any failure (bad flags, bad input, setup failed, prediction
failed; with --json the prediction object is printed first); 130 interrupted (Ctrl-C
cancels the running prediction first).

Docker-only flags of cog (--gpus, --progress, --use-cuda-base-image,
--use-cog-base-image, --dockerfile) are accepted and ignored.
"""


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
    if args.no_docs:
        settings = settings.replace(docs=False)
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
    # A SIGTERM or SIGINT in that window is kept and handed to serve(), which acts on it
    # as on one that comes later: SIGTERM's default action would end this process at
    # once, leaving the engine's temporary folder behind (and Ctrl-C would skip the drain).
    early: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():  # main() may run on another thread
        previous = {sig: signal.signal(sig, lambda signum, frame: early.append(signum))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
    engine = what.engine()
    try:
        engine.start()
        from .server.service import serve

        result = serve(what.ref, host=args.host, port=args.port, upload_url=args.upload_url,
                       await_explicit_shutdown=bool(args.await_explicit_shutdown), mode=args.x_mode,
                       log_format=args.log_format, settings=settings, cwd=what.cwd, orchestrator=engine,
                       pending_signals=early)
    finally:
        engine.stop()  # idempotent; covers a failure before serve() took over
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return int(result or 0)


def _cmd_schema(args: argparse.Namespace) -> int:
    from .embed import Model

    from .oneshot import sigterm_interrupts

    settings = Settings.from_env()
    _configure_logging(settings)
    with sigterm_interrupts():  # SIGTERM during setup: Model.start() stops the worker and removes its folder
        with Model(args.predictor, mode=args.x_mode, settings=settings, on_setup_log=_stderr_log) as model:
            sys.stdout.write(json.dumps(model.schema, indent=2, ensure_ascii=False) + "\n")
            sys.stdout.flush()
    return EXIT_OK


def _unknown_arguments(parser: argparse.ArgumentParser, command: str, extras: Sequence[str]) -> int:
    """Arguments no flag took, reported under the subcommand's usage line (not the top-level one)."""
    sub = _subparser(parser, command)
    if command not in _ONESHOT:
        sub.error(f"unrecognized arguments: {' '.join(extras)}")
    sub.print_usage(sys.stderr)
    flags = [e for e in extras if e.startswith("-") and e != "-"]
    if flags:
        flag = flags[0]
        if flag.startswith("--"):
            print(f"unknown flag: {flag.split('=', 1)[0]}", file=sys.stderr)  # pflag's wording
        else:
            print(f"unknown shorthand flag: {flag[1:2]!r} in {flag}", file=sys.stderr)
    else:  # cobra.MaximumNArgs(1)
        print(f"accepts at most 1 arg(s), received {1 + len(extras)}", file=sys.stderr)
    return EXIT_FAILED


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:  # argparse keeps subparsers only there
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    return parser


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
    args, extras = parser.parse_known_args(argv)
    if not args.command:
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        parser.print_help()
        return EXIT_OK
    if extras:
        return _unknown_arguments(parser, args.command, extras)
    if args.command in _ONESHOT:
        from . import oneshot

        if getattr(args, "debug", None) not in (None, "false"):
            os.environ.setdefault("COG_LOG_LEVEL", "debug")
        _configure_logging(Settings.from_env())
        try:
            return oneshot.run_command(args, "train" if args.command == "train" else "predict")
        except oneshot.CliError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_FAILED
        except errors.MinicogError as exc:  # a bad cog.yaml, a reference that names nothing
            print(str(exc), file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt as exc:
            return _interrupted(exc)
    try:
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "bundle":
            return _cmd_bundle(args)
        return _cmd_schema(args)
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
    except KeyboardInterrupt as exc:
        return _interrupted(exc)


def _interrupted(exc: KeyboardInterrupt) -> int:
    """Ctrl-C: 130; SIGTERM where a command turned it into an exception (minicog.oneshot.Terminated): 143."""
    from .oneshot import Terminated

    if isinstance(exc, Terminated):
        print("\nTerminated", file=sys.stderr)
        return EXIT_TERMINATED
    print("\nInterrupted", file=sys.stderr)
    return EXIT_INTERRUPTED
