"""What a run directory pins of its data (issue 23, class 2)."""

import pytest
from test_cache import _noise, make_folder

from evores.core.errors import CheckpointError
from evores.data.cache import open_cache
from evores.store.checkpoint import RunDirectory
from evores.store.rundir import keep_data_report


def cache_of(folder, tmp_path):
    return open_cache(folder, [8], cache_dir=tmp_path / "cache", val_fraction=0.2,
                      test_fraction=0.2)  # fmt: skip


def test_a_resume_on_changed_data_is_refused_in_one_line(tmp_path):
    """A run stopped on 60 images resumed on 120: images it trained on became test images."""
    folder = make_folder(tmp_path / "data", per_class=6)
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create("seed = 1\n")
    started = keep_data_report(run_dir, cache_of(folder, tmp_path))
    assert keep_data_report(run_dir, cache_of(folder, tmp_path)) == started  # the same data
    for index in range(6):  # images added since
        _noise(100 + index).save(folder / "a" / f"added{index}.png")
    with pytest.raises(CheckpointError, match="dataset's images changed since") as caught:
        keep_data_report(run_dir, cache_of(folder, tmp_path))
    assert "\n" not in str(caught.value) and "started on 21 images" in str(caught.value)


def test_a_run_directory_from_before_the_pin_resumes_as_it_did(tmp_path):
    folder = make_folder(tmp_path / "data", per_class=6)
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create("seed = 1\n")
    cache = cache_of(folder, tmp_path)
    run_dir.file("data_report.json").write_text(
        '{"classes": ["a", "b", "c"], "report": {"n_images": 18}}'
    )
    assert keep_data_report(run_dir, cache).class_names == ["a", "b", "c"]
