"""Where the slot count comes from: COG_MAX_CONCURRENCY > cog.yaml concurrency.max > @concurrent > 1,
and the command line's --max-concurrency above them all."""

import argparse

from minicog import cli
from minicog.server.service import Service
from minicog.settings import Settings

from support import predictor

ASYNC_REF = predictor("async_slots.py") + ":Predictor"


def _slots(tmp_path, settings, max_concurrency=None):
    service = Service(ASYNC_REF, settings=settings, host="127.0.0.1", port=0, cwd=str(tmp_path),
                      max_concurrency=max_concurrency)
    service.start()
    try:
        assert service.wait_ready(60)
        return service.orchestrator.num_slots
    finally:
        service.stop(10)


def test_cog_yaml_concurrency_max_sets_the_slot_count(tmp_path):
    (tmp_path / "cog.yaml").write_text(f"run: {ASYNC_REF}\nconcurrency:\n  max: 3\n")
    assert _slots(tmp_path, Settings.from_env({})) == 3


def test_environment_beats_cog_yaml(tmp_path):
    (tmp_path / "cog.yaml").write_text(f"run: {ASYNC_REF}\nconcurrency:\n  max: 3\n")
    assert _slots(tmp_path, Settings.from_env({"COG_MAX_CONCURRENCY": "2"})) == 2


def test_no_cog_yaml_and_no_setting_means_one_slot(tmp_path):
    assert _slots(tmp_path, Settings.from_env({})) == 1


def test_command_line_flag_beats_the_environment(monkeypatch):
    monkeypatch.setenv("COG_MAX_CONCURRENCY", "2")
    assert cli._settings(argparse.Namespace(max_concurrency=5)).max_concurrency == 5
    assert cli._settings(argparse.Namespace(max_concurrency=None)).max_concurrency == 2
