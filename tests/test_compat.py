"""The ``cog`` / ``coglet`` aliases and the public ``minicog`` namespace.

Most checks run in a fresh interpreter: they are about what ``sys.modules``
looks like after an import, which this test process has already changed.
"""

import ast
import os
import subprocess
import sys
import textwrap

import pytest

from support import ROOT

COG_PUBLIC = [
    "BaseRunner", "BasePredictor", "BaseModel", "Opaque", "Input", "FieldInfo", "Path", "Secret",
    "File", "URLFile", "URLPath", "ConcatenateIterator", "AsyncConcatenateIterator",
    "CancelationException", "current_scope", "streaming", "concurrent",
]


def run_py(code: str, *, cwd: str = ROOT, extra_path: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, ROOT) if p)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_import_cog_gives_minicog_sdk():
    proc = run_py(f"""
        import minicog.compat, minicog
        import cog
        from cog import {", ".join(COG_PUBLIC)}
        for name in {COG_PUBLIC!r}:
            assert getattr(cog, name) is getattr(minicog, name), name
        assert sorted(n for n in cog.__all__ if n not in ("__version__", "ExperimentalFeatureWarning", "emit_metric")) == sorted({COG_PUBLIC!r})
        from minicog._version import COG_VERSION
        assert cog.__version__ == COG_VERSION == "0.23.1"
        from cog.types import Path as P, Secret as S
        assert P is minicog.Path and S is minicog.Secret
        import cog.types, cog.predictor, cog.input, cog.mode, cog.model
        assert cog.predictor.BaseRunner is minicog.BaseRunner
        assert cog.input.Input is minicog.Input and cog.input.FieldInfo is minicog.FieldInfo
        assert cog.model.BaseModel is minicog.BaseModel
        from cog.mode import Mode
        assert [m.value for m in Mode] == ["predict", "train"] and str(Mode.TRAIN) == "train"
        from cog._version import __version__ as v
        assert v == COG_VERSION
        try:
            import cog.server
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError("cog.server should not exist")
        try:
            cog.nope
        except AttributeError as exc:
            assert str(exc) == "module 'cog' has no attribute 'nope'"
        print("ok")
    """)
    assert proc.stdout.strip() == "ok"


def test_coglet_alias():
    proc = run_py("""
        import minicog.compat
        import cog, coglet
        from minicog.sdk import runtime
        assert coglet.CancelationException is cog.CancelationException
        assert issubclass(coglet.CancelationException, BaseException)
        assert not issubclass(coglet.CancelationException, Exception)
        assert coglet.__version__ == "0.23.1" and coglet.__build__.version == "0.23.1"
        assert coglet.server.active is False
        runtime._set_active()
        assert coglet.server.active is True
        scope = coglet._sdk.current_scope()
        assert scope.context == {} and scope.metrics is not None
        print("ok")
    """)
    assert proc.stdout.strip() == "ok"


def test_deprecated_names_print_once_to_stderr():
    proc = run_py("""
        import minicog.compat
        import cog, minicog, sys
        from cog import emit_metric
        emit_metric("x", 1)          # no-op outside a prediction
        assert cog.emit_metric is emit_metric
        assert minicog.emit_metric is emit_metric
        from cog import ExperimentalFeatureWarning
        import warnings
        assert issubclass(ExperimentalFeatureWarning, FutureWarning)
        warnings.filterwarnings("ignore", category=ExperimentalFeatureWarning)
        cog.ExperimentalFeatureWarning
    """)
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "cog: emit_metric() is deprecated and will be removed in a future release. "
        "Use current_scope().record_metric(name, value) instead.",
        "cog: ExperimentalFeatureWarning is deprecated and will be removed in a future release. "
        "Remove `ExperimentalFeatureWarning` from your imports and any associated "
        "`warnings.filterwarnings(...)` calls.",
    ]


def test_emit_metric_forwards_to_current_scope():
    proc = run_py("""
        import minicog.compat
        from cog import emit_metric
        from minicog.sdk.scope import Scope, use_scope
        events = []
        with use_scope(Scope({}, lambda *a: events.append(a))):
            emit_metric("tokens", 7)
        print(events)
    """)
    assert proc.stdout.strip() == "[('tokens', 7, 'replace')]"


def test_real_cog_already_imported_is_kept_unless_forced(tmp_path):
    pkg = tmp_path / "cog"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("REAL = True\n")
    (pkg / "types.py").write_text("REAL_TYPES = True\n")
    proc = run_py("""
        import sys
        import cog, cog.types
        assert cog.REAL
        import minicog.compat as compat
        assert sys.modules["cog"] is cog and not compat.installed()
        assert compat.install() is False
        assert sys.modules["cog"] is cog
        assert compat.install(force=True) is True
        import cog as now
        assert now is not cog and compat.installed()
        from cog.types import Path
        import minicog
        assert Path is minicog.Path
        print("ok")
    """, extra_path=str(tmp_path))
    assert proc.stdout.strip() == "ok"


def test_install_is_idempotent():
    from minicog import compat
    import cog
    assert compat.install() is True
    assert compat.install() is True
    import cog as again
    assert again is cog
    assert compat.installed()


def test_import_minicog_stays_light():
    proc = run_py("""
        import sys
        import minicog
        loaded = sorted(m for m in sys.modules if m.startswith("minicog"))
        print(loaded)
        bad = [m for m in loaded if m.startswith(("minicog.server", "minicog.worker", "minicog.embed", "minicog.cli"))]
        assert not bad, bad
        assert "cog" not in sys.modules
        assert "multiprocessing" not in sys.modules
    """)
    assert "minicog.sdk" in proc.stdout


def test_minicog_public_names():
    import minicog
    from minicog import errors
    for name in COG_PUBLIC + ["active", "__version__"]:
        assert name in minicog.__all__
        assert hasattr(minicog, name)
    assert minicog.PredictionError is errors.PredictionError
    assert minicog.PredictionCanceled is errors.PredictionCanceled
    assert minicog.InputValidationError is errors.InputValidationError
    assert "Model" in minicog.__all__ and "serve_in_thread" in minicog.__all__
    with pytest.raises(AttributeError):
        minicog.no_such_name  # noqa: B018


def test_embedding_api_is_lazy():
    embed_path = os.path.join(ROOT, "minicog", "embed.py")
    if not os.path.exists(embed_path):
        pytest.skip("minicog/embed.py is written by another helper and does not exist yet")
    proc = run_py("""
        import sys, minicog
        assert "minicog.embed" not in sys.modules
        Model = minicog.Model
        assert "minicog.embed" in sys.modules
        import minicog.embed
        assert Model is minicog.embed.Model and minicog.serve_in_thread is minicog.embed.serve_in_thread
    """)
    assert proc.returncode == 0


def test_sdk_imports_nothing_of_minicog_outside_sdk():
    sdk_dir = os.path.join(ROOT, "minicog", "sdk")
    for filename in sorted(os.listdir(sdk_dir)):
        if not filename.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(sdk_dir, filename), encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{filename}: relative import above minicog.sdk"
                assert not (node.module or "").startswith("minicog"), f"{filename}: imports {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("minicog"), f"{filename}: imports {alias.name}"
