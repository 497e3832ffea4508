"""The package's shape, checked: standard library only, and imports that flow one way.

These rules are the ones docs/architecture.rst states; a change that breaks one
fails here before it blurs the layering.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

from support import ROOT

PKG = pathlib.Path(ROOT) / "minicog"

# module prefix → minicog modules it must never import (directly).
FORBIDDEN = {
    "minicog.sdk": ["minicog.server", "minicog.worker", "minicog.cli", "minicog.embed", "minicog.loader",
                    "minicog.schema", "minicog.encoding", "minicog.validation", "minicog.files",
                    "minicog.protocol", "minicog.settings", "minicog.errors", "minicog.config", "minicog.compat"],
    "minicog.worker": ["minicog.server", "minicog.cli", "minicog.embed"],
    "minicog.server": ["minicog.worker", "minicog.cli", "minicog.embed"],
    "minicog.protocol": ["minicog.server", "minicog.worker", "minicog.cli", "minicog.embed"],
    "minicog.schema": ["minicog.server", "minicog.worker", "minicog.cli", "minicog.embed"],
    "minicog.validation": ["minicog.server", "minicog.worker", "minicog.cli", "minicog.embed", "minicog.sdk"],
    "minicog.encoding": ["minicog.server", "minicog.worker", "minicog.cli", "minicog.embed"],
    "minicog.files": ["minicog.server", "minicog.worker", "minicog.cli", "minicog.embed"],
    "minicog.embed": ["minicog.cli", "minicog.oneshot", "minicog.server"],
    "minicog.cli": ["minicog.server"],
    "minicog.oneshot": ["minicog.cli", "minicog.server", "minicog.worker"],
    # The engine (the parent side of the worker protocol) serves the server, the
    # embedding API and the command line; it imports none of them.
    "minicog.engine": ["minicog.server", "minicog.worker", "minicog.cli", "minicog.embed", "minicog.sdk"],
}

# The only imports of minicog.server allowed despite the rules above: embed and cli
# import the server only to serve (serve_in_thread, the serve command).
SERVE_ONLY = {"minicog.embed": "minicog.server.service", "minicog.cli": "minicog.server.service"}


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path):
    """(lineno, absolute module name) for every import statement in *path*."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:  # "from minicog import server" imports minicog.server
                yield node.lineno, f"{name}.{alias.name}"


SOURCES = sorted(PKG.rglob("*.py"))


def test_runtime_code_imports_only_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"minicog", "cog", "coglet", "__future__"}
    bad = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in SOURCES for line, name in _imports(p)
           if name.split(".")[0] not in allowed and not name.startswith("minicog")]
    # names from "from X import Y" (X.Y) are only stdlib when X is; filter those
    bad = [b for b in bad if b.rsplit(": ", 1)[1].split(".")[0] not in allowed]
    assert not bad, "non-stdlib imports:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG.parent)))
def test_imports_flow_one_way(path):
    module = _module_name(path)
    rules = [banned for prefix, banned in FORBIDDEN.items() if module == prefix or module.startswith(prefix + ".")]
    if module.startswith("minicog.models"):
        return  # the default model is user code, loaded by the worker
    allowed = SERVE_ONLY.get(module)
    violations = [f"line {line}: {name}" for line, name in _imports(path) for banned in rules for b in banned
                  if (name == b or name.startswith(b + "."))
                  and not (allowed and (name == allowed or name.startswith(allowed + ".")))]
    assert not violations, f"{module} must not import: " + ", ".join(violations)


def test_sdk_import_stays_light():
    """A model's `import cog` loads the SDK, not the server, worker or multiprocessing."""
    code = ("import sys; sys.path.insert(0, %r); import minicog.compat, cog; "
            "heavy = [m for m in ('minicog.server', 'minicog.worker', 'minicog.embed', 'http.server', "
            "'multiprocessing.connection', 'asyncio') if m in sys.modules]; print(heavy)") % ROOT
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_the_engine_is_a_package_of_its_own():
    """The parent side lives in minicog/engine/, not under server/ (server/ keeps HTTP only)."""
    engine = PKG / "engine"
    assert (engine / "__init__.py").exists()
    for name in ("engine.py", "process.py", "run.py", "listener.py", "rules.py", "plan.py"):
        assert (engine / name).exists(), name
    server_modules = {p.stem for p in (PKG / "server").glob("*.py")} - {"__init__"}
    assert server_modules <= {"http", "connections", "prediction", "sse", "webhooks", "outputs", "spool", "service",
                              "orchestrator", "metrics", "timers", "deadlines", "docs"}
