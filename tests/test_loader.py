"""Predictor references: parse_ref, load_predictor (Cog's rules), resolve_ref."""

import os
import textwrap
import zipfile
import warnings

import pytest

from minicog import loader
from minicog.errors import LoadError
from minicog.loader import LoadedPredictor, load_predictor, parse_ref, resolve_ref
from support import PREDICTORS, predictor


def load_quiet(ref, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_predictor(ref, **kw)


def warning_texts(seen, category):
    return [str(w.message) for w in seen if issubclass(w.category, category)]


# ----------------------------------------------------------------- parse_ref

def test_parse_ref():
    assert parse_ref("predict.py:Predictor") == ("predict.py", "Predictor")
    assert parse_ref("predict.py") == ("predict.py", None)
    assert parse_ref("a/b.py:train") == ("a/b.py", "train")


@pytest.mark.parametrize("ref", ["", "  ", ":Runner", "predict.py:", "predict.py:not-a-name"])
def test_parse_ref_rejects_malformed(ref):
    with pytest.raises(LoadError, match="predict.py:Predictor"):
        parse_ref(ref)


# ------------------------------------------------------------ load_predictor

def test_load_runner_class():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the modern spelling warns about nothing
        lp = load_predictor(predictor("load_runner.py:Runner"))
    assert isinstance(lp, LoadedPredictor)
    assert lp.name == "Runner" and lp.method_name == "run" and lp.mode == "predict"
    assert type(lp.instance).__name__ == "Runner"
    assert lp.instance.ready is False  # no setup yet
    assert lp.fn(text="hi") == "HI"
    assert lp.fn.__self__ is lp.instance
    assert lp.setup.__self__ is lp.instance and lp.healthcheck() is True
    assert (lp.is_async, lp.is_async_gen, lp.is_generator, lp.streaming, lp.concurrency_max) == (False, False, False, False, None)
    assert lp.module.__name__ == "load_runner"
    assert lp.path == predictor("load_runner.py")
    import sys
    assert sys.modules["load_runner"] is lp.module


def test_default_class_is_runner():
    lp = load_quiet(predictor("load_runner.py"))
    assert lp.name == "Runner"


def test_runner_preferred_over_predictor_with_warning():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        lp = load_predictor(predictor("load_runner_and_predictor.py"))
    assert lp.name == "Runner" and lp.fn() == "runner"
    assert warning_texts(seen, UserWarning) == [
        "Both Runner and Predictor are defined; using Runner. Specify a class name explicitly if this is not intended."
    ]


def test_explicit_predictor_class_can_be_chosen():
    lp = load_quiet(predictor("load_runner_and_predictor.py:Predictor"))
    assert lp.method_name == "predict" and lp.fn() == "predictor"


def test_deprecated_predictor_warns_like_cog():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        lp = load_predictor(predictor("load_predictor_only.py"))
    assert lp.name == "Predictor" and lp.method_name == "predict"
    assert lp.fn(n=1) == 2
    assert warning_texts(seen, DeprecationWarning) == [
        "Predictor is deprecated; use Runner instead",
        "Predictor.predict() is deprecated; use run() instead",
        "BasePredictor is deprecated; use BaseRunner instead",
    ]


def test_run_and_predict_both_defined():
    with pytest.raises(LoadError) as exc:
        load_quiet(predictor("load_invalid_runner.py:Runner"))
    assert str(exc.value) == "Runner must define either run() or predict(), not both"


def test_no_run_or_predict_method():
    with pytest.raises(LoadError) as exc:
        load_quiet(predictor("load_invalid_runner.py:Empty"))
    assert str(exc.value) == "run or predict method not found: Empty"


def test_invalid_runner_without_predictor_reports_runner_error():
    with pytest.raises(LoadError) as exc:
        load_quiet(predictor("load_invalid_runner.py"))
    assert str(exc.value) == "Runner must define either run() or predict(), not both"


def test_runner_not_callable():
    with pytest.raises(LoadError) as exc:
        load_quiet(predictor("load_runner_not_callable.py"))
    assert str(exc.value) == "Runner exists but is not a class or callable"


def test_runner_may_be_a_function():
    lp = load_quiet(predictor("load_runner_function.py"))
    assert lp.instance is None and lp.fn(x=3) == 3


def test_module_without_runner_or_predictor():
    with pytest.raises(LoadError) as exc:
        load_quiet(predictor("load_nothing.py"))
    assert str(exc.value).startswith("module 'load_nothing' has no Runner or Predictor.")
    assert "load_nothing.py:ClassName" in str(exc.value)


def test_missing_name_lists_candidates():
    with pytest.raises(LoadError) as exc:
        load_quiet(predictor("load_nothing.py:Runner"))
    assert "has no class or function named 'Runner'" in str(exc.value)
    assert "It defines: Model, helper." in str(exc.value)


def test_missing_file():
    with pytest.raises(LoadError) as exc:
        load_quiet("does_not_exist.py:Runner", cwd=PREDICTORS)
    assert str(exc.value).startswith(f"predictor file not found: {os.path.join(PREDICTORS, 'does_not_exist.py')}")


def test_directory_is_refused():
    with pytest.raises(LoadError, match="names a directory"):
        load_quiet(PREDICTORS + ":Runner")


def test_import_error_includes_original_text():
    with pytest.raises(LoadError) as exc:
        load_quiet(predictor("load_import_error.py"))
    msg = str(exc.value)
    # The file and line of the failing import, then the original error (one line).
    assert msg.startswith(f"failed to import {predictor('load_import_error.py')} (line 2): ModuleNotFoundError: ")
    assert "No module named 'minicog_no_such_package_xyz'" in msg
    assert isinstance(exc.value.__cause__, ModuleNotFoundError)
    import sys
    assert "load_import_error" not in sys.modules


def test_syntax_error_names_the_line(tmp_path):
    (tmp_path / "load_broken_syntax.py").write_text("x = 1\ndef run(:\n")
    with pytest.raises(LoadError) as exc:
        load_quiet("load_broken_syntax.py:run", cwd=str(tmp_path))
    assert "(line 2): SyntaxError:" in str(exc.value)


def test_concurrent_on_sync_fails_at_import_with_cogs_text():
    with pytest.raises(LoadError) as exc:
        load_quiet(predictor("load_concurrent_sync.py"))
    assert "TypeError: concurrent max greater than 1 requires an async function" in str(exc.value)


def test_constructor_failure():
    with pytest.raises(LoadError) as exc:
        load_quiet(predictor("load_init_fails.py"))
    assert "failed to create Runner()" in str(exc.value)
    assert "RuntimeError: no GPU here" in str(exc.value)


def test_relative_paths_are_relative_to_cwd_and_siblings_import():
    lp = load_quiet("load_sibling.py:Runner", cwd=PREDICTORS)
    assert lp.fn() == "from sibling"
    assert lp.path == os.path.join(PREDICTORS, "load_sibling.py")


def test_function_predictors_are_returned_as_is():
    lp = load_quiet(predictor("load_functions.py:predict"))
    import load_functions
    assert lp.instance is None and lp.setup is None and lp.healthcheck is None
    assert lp.fn is load_functions.predict and lp.method_name == "predict"
    assert lp.fn(x=2) == 4
    gen = load_quiet(predictor("load_functions.py:gen"))
    assert gen.is_generator and not gen.is_async
    agen = load_quiet(predictor("load_functions.py:agen"))
    assert agen.is_async and agen.is_async_gen and agen.streaming and agen.concurrency_max == 4


def test_non_callable_target():
    with pytest.raises(LoadError, match="'NOT_CALLABLE' in .* is a int, not a class or function"):
        load_quiet(predictor("load_functions.py:NOT_CALLABLE"))


def test_async_runner_flags():
    lp = load_quiet(predictor("load_async_runner.py"))
    assert lp.is_async and not lp.is_async_gen and lp.streaming and lp.concurrency_max == 3
    import inspect
    assert inspect.iscoroutinefunction(lp.setup)


def test_train_mode_function_and_classes():
    fn = load_quiet(predictor("load_functions.py:train"), mode="train")
    assert fn.mode == "train" and fn.is_async and fn.method_name == "train"
    trainer = load_quiet(predictor("load_trainer.py:Trainer"), mode="train")
    assert trainer.method_name == "train" and trainer.fn(steps=3) == 3
    both = load_quiet(predictor("load_trainer.py:Both"), mode="train")
    assert both.fn() == "train"
    assert load_quiet(predictor("load_trainer.py:Both")).fn() == "run"


def test_train_mode_class_without_train():
    with pytest.raises(LoadError) as exc:
        load_quiet(predictor("load_runner.py:Runner"), mode="train")
    assert str(exc.value).startswith("Training not supported by this predictor: Runner has no train() method.")


def test_unknown_mode():
    with pytest.raises(LoadError, match="unknown mode 'serve'"):
        load_quiet(predictor("load_runner.py"), mode="serve")


# --------------------------------------------------------------- resolve_ref

def test_resolve_explicit_wins(tmp_path):
    (tmp_path / "cog.yaml").write_text('run: "run.py:Runner"\n')
    assert resolve_ref("x.py:Y", mode="predict", cwd=str(tmp_path), environ={"COG_PREDICT_TYPE_STUB": "e.py:E"}) == "x.py:Y"


def test_resolve_from_cog_yaml(tmp_path):
    (tmp_path / "cog.yaml").write_text('build:\n  gpu: true\nrun: "src/run.py:Runner"\ntrain: "train.py:train"\n')
    env = {"COG_PREDICT_TYPE_STUB": "e.py:E"}
    assert resolve_ref(None, mode="predict", cwd=str(tmp_path), environ=env) == str(tmp_path / "src/run.py") + ":Runner"
    assert resolve_ref(None, mode="train", cwd=str(tmp_path), environ=env) == str(tmp_path / "train.py") + ":train"


def test_resolve_cog_yaml_predict_key(tmp_path):
    (tmp_path / "cog.yaml").write_text('predict: "predict.py:Predictor"\n')
    assert resolve_ref(None, mode="predict", cwd=str(tmp_path), environ={}) == str(tmp_path / "predict.py") + ":Predictor"


def test_resolve_from_environment(tmp_path):
    assert resolve_ref(None, mode="predict", cwd=str(tmp_path), environ={"COG_PREDICT_TYPE_STUB": "p.py:P"}) == "p.py:P"
    env = {"COG_PREDICT_TYPE_STUB": "p.py:P", "COG_TRAIN_TYPE_STUB": "t.py:t"}
    assert resolve_ref(None, mode="train", cwd=str(tmp_path), environ=env) == "t.py:t"
    # Training falls back to the predict stub, as Cog's server does.
    assert resolve_ref(None, mode="train", cwd=str(tmp_path), environ={"COG_PREDICT_TYPE_STUB": "p.py:P"}) == "p.py:P"


def test_resolve_cog_yaml_without_train_falls_through_to_environment(tmp_path):
    (tmp_path / "cog.yaml").write_text('run: "run.py:Runner"\n')
    assert resolve_ref(None, mode="train", cwd=str(tmp_path), environ={"COG_TRAIN_TYPE_STUB": "t.py:t"}) == "t.py:t"


def test_resolve_default_model(tmp_path):
    from minicog.models import DEFAULT_REF
    assert resolve_ref(None, mode="predict", cwd=str(tmp_path), environ={}) == DEFAULT_REF
    lp = load_quiet(DEFAULT_REF)
    assert lp.method_name == "run"


def test_resolve_nothing_for_training(tmp_path):
    with pytest.raises(LoadError) as exc:
        resolve_ref(None, mode="train", cwd=str(tmp_path), environ={})
    assert "no training function was named" in str(exc.value)
    assert "COG_TRAIN_TYPE_STUB" in str(exc.value)


def test_resolve_broken_cog_yaml_is_a_load_error_naming_the_line(tmp_path):
    (tmp_path / "cog.yaml").write_text(textwrap.dedent("""\
        build:
          gpu: true
         python_version: "3.11"
        """))
    with pytest.raises(LoadError) as exc:
        resolve_ref(None, mode="predict", cwd=str(tmp_path), environ={})
    assert "cog.yaml, line 3:" in str(exc.value)


def test_all_names():
    assert set(loader.__all__) >= {"LoadedPredictor", "parse_ref", "load_predictor", "resolve_ref"}


# ------------------------------------------------------------ paths in a zip

def test_zip_location_finds_files_and_folders_inside_an_archive(tmp_path):
    archive = tmp_path / "app.pyz"
    with zipfile.ZipFile(archive, "w") as zf:  # no entries for folders, as in minicog.pyz
        zf.writestr("pkg/models/echo.py", "def run(text: str) -> str:\n    return text * 2\n")
    inside = os.path.join(str(archive), "pkg", "models")
    assert loader.zip_location(os.path.join(inside, "echo.py")) == (str(archive), "pkg/models/echo.py")
    assert loader.zip_location(inside) == (str(archive), "pkg/models")  # a folder: bundle copies from it
    # Only the path is read: an entry the archive lacks is still located; the loader says it is missing.
    assert loader.zip_location(os.path.join(inside, "gone.py")) == (str(archive), "pkg/models/gone.py")
    with pytest.raises(LoadError, match="predictor file not found"):
        load_quiet(os.path.join(inside, "gone.py") + ":run")
    assert load_quiet(os.path.join(inside, "echo.py") + ":run").fn(text="ab") == "abab"


def test_zip_location_is_none_outside_an_archive(tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_text("not a zip")
    assert loader.zip_location(str(tmp_path / "a" / "b.py")) is None  # no ancestor is a file
    assert loader.zip_location(os.path.join(str(plain), "b.py")) is None  # the nearest file is not a zip
    assert loader.zip_location("/") is None
