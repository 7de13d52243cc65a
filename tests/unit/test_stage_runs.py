"""A finished Ray Train run's storage is deleted once its stage output is cached (no stale restores)."""

from __future__ import annotations

from longtail.train.chain import forget_run


def test_forget_run_deletes_only_that_run(tmp_path):
    (tmp_path / "fit-abc" / "checkpoint_1").mkdir(parents=True)
    (tmp_path / "fit-abc" / "checkpoint_1" / "state.json").write_text("{}")
    (tmp_path / "fit-other").mkdir()
    forget_run(str(tmp_path), "fit-abc")
    assert not (tmp_path / "fit-abc").exists() and (tmp_path / "fit-other").is_dir()
    forget_run(str(tmp_path), "fit-abc")  # already gone: nothing to do
    forget_run(f"file://{tmp_path}", "fit-other")  # URIs go through pyarrow's filesystems
    assert not (tmp_path / "fit-other").exists()
