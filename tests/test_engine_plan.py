"""The one resolver of what to run and with how many slots and workers (minicog.engine.plan)."""

import os

import pytest

from minicog.engine import plan
from minicog.engine.plan import parse_devices
from minicog.settings import Settings
from support import predictor


def _folder(tmp_path, cog_yaml=None):
    (tmp_path / "predict.py").write_text("from cog import BasePredictor\n"
                                         "class Predictor(BasePredictor):\n"
                                         "    def predict(self) -> str:\n        return 'x'\n")
    if cog_yaml is not None:
        (tmp_path / "cog.yaml").write_text(cog_yaml)
    return str(tmp_path)


def test_cog_yaml_gives_the_reference_and_the_slots(tmp_path):
    cwd = _folder(tmp_path, 'predict: "predict.py:Predictor"\nconcurrency:\n  max: 4\n')
    p = plan(cwd=cwd, settings=Settings(), environ={})
    assert p.ref == os.path.join(cwd, "predict.py:Predictor") and p.cwd == cwd
    assert p.max_concurrency == 4 and p.slots_per_worker == 4
    assert p.workers == 1 and p.devices is None


def test_slot_sources_rank_env_then_caller_then_cog_yaml(tmp_path):
    cwd = _folder(tmp_path, 'predict: "predict.py:Predictor"\nconcurrency:\n  max: 4\n')
    assert plan(cwd=cwd, settings=Settings(max_concurrency=2), environ={}).slots_per_worker == 2
    assert plan(cwd=cwd, settings=Settings(), environ={}, max_concurrency=3).slots_per_worker == 3
    env_and_caller = plan(cwd=cwd, settings=Settings(max_concurrency=2), environ={}, max_concurrency=3)
    assert env_and_caller.slots_per_worker == 2  # COG_MAX_CONCURRENCY (or --max-concurrency) wins


def test_no_cog_yaml_means_the_decorator_decides(tmp_path):
    p = plan(predictor("basic_echo.py"), cwd=_folder(tmp_path), settings=Settings(), environ={})
    assert p.slots_per_worker is None and p.ref == predictor("basic_echo.py")


def test_workers_from_the_argument_the_setting_or_auto(tmp_path):
    cwd = _folder(tmp_path)
    ref = predictor("basic_echo.py")
    assert plan(ref, cwd=cwd, settings=Settings(), environ={}).workers == 1
    assert plan(ref, cwd=cwd, settings=Settings(workers="3"), environ={}).workers == 3
    assert plan(ref, cwd=cwd, settings=Settings(workers="3"), environ={}, workers=2).workers == 2
    auto = plan(ref, cwd=cwd, settings=Settings(), environ={}, workers="auto")
    assert auto.workers == len(os.sched_getaffinity(0)) and auto.devices is None
    with pytest.raises(ValueError):
        plan(ref, cwd=cwd, settings=Settings(), environ={}, workers=0)
    with pytest.raises(ValueError):
        plan(ref, cwd=cwd, settings=Settings(), environ={}, workers="many")


def test_minicog_workers_is_read_from_the_environment():
    assert Settings.from_env({"MINICOG_WORKERS": "2"}).workers == "2"
    assert Settings.from_env({"MINICOG_WORKERS": "auto"}).workers == "auto"
    assert Settings.from_env({"MINICOG_WORKERS": "0"}).workers == "1"  # invalid: the default, with a warning


def test_gpus_give_each_worker_its_own_device(tmp_path):
    cwd = _folder(tmp_path)
    ref = predictor("basic_echo.py")
    p = plan(ref, cwd=cwd, settings=Settings(), environ={}, gpus="0, 1")
    assert p.workers == 2 and p.devices == ("0", "1")
    p = plan(ref, cwd=cwd, settings=Settings(), environ={}, gpus="0,1", workers=4)
    assert p.devices == ("0", "1", "0", "1")  # round robin
    p = plan(ref, cwd=cwd, settings=Settings(), environ={"CUDA_VISIBLE_DEVICES": "2,3,5"}, workers="auto")
    assert p.workers == 3 and p.devices == ("2", "3", "5")
    p = plan(ref, cwd=cwd, settings=Settings(), environ={"CUDA_VISIBLE_DEVICES": "2"}, workers="auto")
    assert p.devices is None  # one device: nothing to split
    with pytest.raises(ValueError):
        plan(ref, cwd=cwd, settings=Settings(), environ={}, gpus=" , ")


def test_parse_devices():
    assert parse_devices("0,1") == ["0", "1"]
    assert parse_devices(" 0 ,, GPU-abc ") == ["0", "GPU-abc"]
    assert parse_devices(None) == [] and parse_devices("") == []


def test_the_engine_gets_the_plan(tmp_path):
    cwd = _folder(tmp_path, 'predict: "predict.py:Predictor"\nconcurrency:\n  max: 4\n')
    engine = plan(cwd=cwd, settings=Settings(), environ={}, gpus="0,1").engine()
    assert engine.ref.endswith("predict.py:Predictor") and engine.workers == 2 and engine.max_concurrency == 4
    assert [w["device"] for w in engine.worker_states()] == ["0", "1"]
    assert not engine.started
