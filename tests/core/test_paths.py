"""Paths that cannot be used are one line naming them, wherever they enter (issue 23, class 7)."""

import os

import pytest

from evores.core.errors import CheckpointError, ConfigError, DataError, EvoresError
from evores.core.paths import usable_path

BAD = {"a NUL byte": "runs/a\0b", "a 300-character name": "runs/" + "n" * 300}
PROBLEM = {"a NUL byte": "NUL byte", "a 300-character name": "File name too long"}


@pytest.mark.parametrize("kind", BAD)
def test_a_path_the_os_cannot_use_is_one_line(kind):
    with pytest.raises(ConfigError, match=PROBLEM[kind]) as caught:
        usable_path(BAD[kind], "--config")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("--config ")


def test_a_path_not_there_yet_is_fine(tmp_path):
    assert usable_path(tmp_path / "new", "--out") == tmp_path / "new"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may enter any folder")
def test_a_path_inside_a_folder_this_user_may_not_enter_is_one_line(tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o000)
    try:
        with pytest.raises(ConfigError, match="Permission denied"):
            usable_path(closed / "my.toml", "config file")
    finally:
        closed.chmod(0o755)


def _load_run(path):
    pytest.importorskip("pandas", reason="pandas is in the test extra")
    from evores.reporting.analysis import load_run

    load_run(path)


def _load_model(path):
    from evores.reporting.winner import load_model

    load_model(path)


def _export(path):
    from evores.reporting.export import export

    export(path, "sqlite:///unused.db")


def _search(path):
    from evores.engine.session import search

    search(out=path)


def _initial(path):
    from evores.engine.session import load_config

    load_config(values={"search": {"initial": path}})


def _config(path):
    from evores import config

    config.load(path)


def _data(path):
    from evores.data.sources import open_source

    open_source(path)


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize(
    ("enter", "error"),
    [
        (_load_run, CheckpointError), (_load_model, CheckpointError), (_export, CheckpointError),
        (_search, CheckpointError), (_initial, ConfigError), (_config, ConfigError),
        (_data, DataError),
    ],
)  # fmt: skip
def test_every_way_in_refuses_such_a_path_in_one_line(kind, enter, error):
    with pytest.raises(error, match=PROBLEM[kind]) as caught:
        enter(BAD[kind])
    assert isinstance(caught.value, EvoresError) and "\n" not in str(caught.value)
