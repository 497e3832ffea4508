"""In the worker, ``import cog`` is always minicog's alias, even when a real ``cog`` was imported first."""

from engine_support import predict, running


def test_worker_alias_wins_over_a_real_cog_imported_at_start_up(tmp_path):
    # A stand-in for a real Cog install: a ``cog`` package on the worker's PYTHONPATH,
    # imported before minicog runs (by sitecustomize, as a .pth file or a site hook would).
    fake = tmp_path / "site"
    (fake / "cog").mkdir(parents=True)
    (fake / "cog" / "__init__.py").write_text(
        "FAKE_COG = True\n"
        "class BasePredictor:\n"
        "    pass\n"
        "class Path(str):\n"
        "    pass\n"
    )
    marker = tmp_path / "imported"
    (fake / "sitecustomize.py").write_text(
        "import cog\n"
        f"open({str(marker)!r}, 'w').write(cog.__file__)\n"
    )
    with running("which_cog.py", env={"PYTHONPATH": str(fake)}) as orch:
        assert marker.exists(), "the fake cog was not imported at worker start-up; the test proves nothing"
        rec = predict(orch, "which", {})
        assert rec.terminal == ("succeeded", False)
        assert rec.outputs() == [{"alias": True, "fake": False}]
