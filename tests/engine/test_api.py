"""evores.search: the CLI's run from Python, with Python values and exceptions."""

import logging
import signal

import pytest
from conftest import assert_same_result

import evores
from evores import run
from evores.core.errors import CheckpointError, ConfigError
from evores.engine.session import _combined
from evores.execution.stopping import STOP_SIGNALS

# conftest.TINY_RUN as Python values.
TINY = {
    "schedule": {"resolutions": [8, 16], "evaluations": [6, 4], "elites": 2},
    "search": {"population": 4, "elitism": 1},
    "train": {"max_epochs": 2, "patience": 1},
    "space": {"fc_units": [16, 64], "conv_filters": [8, 32]},
}


@pytest.fixture
def cached(cache_dir, monkeypatch):
    monkeypatch.setenv("EVORES_CACHE_DIR", str(cache_dir))


@pytest.mark.slow
def test_search_equals_the_command_line_run_and_restores_the_signal_handlers(
    tiny_run, tmp_path, cached
):
    def custom(signum, frame):
        pass

    signal.signal(signal.SIGUSR1, custom)
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    handlers = list(logging.getLogger("evores").handlers)
    summary = evores.search(out=tmp_path / "run", **TINY)
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before
    assert logging.getLogger("evores").handlers == handlers
    assert summary["outcome"]["status"] == "ok"
    assert_same_result(tmp_path / "run", tiny_run[0])
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def test_a_bad_value_raises_a_config_error_and_writes_nothing(tmp_path, cached):
    with pytest.raises(ConfigError, match="train.max_epochs"):
        evores.search(out=tmp_path / "run", train={"max_epochs": "many"})
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        evores.search(out=tmp_path / "run", trian={"max_epochs": 2})
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_resuming_nothing_and_an_empty_out_raise_checkpoint_errors(tmp_path, cached):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        evores.search(out=tmp_path / "run", resume=True)
    with pytest.raises(CheckpointError, match="out is empty"):
        evores.search(out=" ")


def test_a_config_dict_takes_the_overrides_section_by_section():
    config = {"seed": 1, "train": {"max_epochs": 2, "patience": 1}}
    assert _combined(config, {"seed": 2, "train": {"max_epochs": 3}}) == {
        "seed": 2,
        "train": {"max_epochs": 3, "patience": 1},
    }
    assert config == {"seed": 1, "train": {"max_epochs": 2, "patience": 1}}  # left as it was


def test_the_command_line_called_twice_logs_through_one_handler(tmp_path, capsys):
    for _ in range(2):
        assert run.main(["--out", str(tmp_path / "run"), "--set", "seed=x"]) == run.EXIT_USAGE
    named = [h for h in logging.getLogger("evores").handlers if h.get_name() == "evores.cli"]
    assert len(named) == 1
    assert capsys.readouterr().err.count("evores: error:") == 2
    logging.getLogger("evores").removeHandler(named[0])
