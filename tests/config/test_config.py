import tomllib
from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from evores import config as configuration
from evores.core.errors import ConfigError


def test_defaults_resolve_to_the_embedded_ladder():
    config = configuration.load()
    assert config["data"]["path"] == "embedded"
    assert config["schedule"]["resolutions"] == [16, 32, 64]
    assert config["schedule"]["evaluations"] == [24, 16, 8]


def test_user_data_gets_the_hinz_ladder():
    config = configuration.load(overrides=["data.path=/some/folder"])
    assert config["schedule"]["resolutions"] == [32, 64, 128]
    assert config["schedule"]["evaluations"] == [750, 500, 250]


def test_required_keys_exist():
    config = configuration.load()
    for dotted in (
        "data.path data.filter schedule.resolutions schedule.evaluations schedule.elites "
        "search.strategy search.population train.max_epochs train.patience train.max_seconds "
        "fitness.function"
    ).split():
        section, key = dotted.split(".")
        assert key in config[section]
    assert "seed" in config


def test_resolved_config_round_trips_through_toml(tmp_path):
    config = configuration.load(overrides=["seed=7", "space.learning_rate=[0.001, 0.1]"])
    path = tmp_path / "config.toml"
    path.write_text(configuration.to_toml(config))
    assert tomllib.loads(path.read_text())["seed"] == 7
    assert configuration.load(path) == config


def test_overrides_parse_toml_values_and_bare_strings():
    assert configuration.parse_override("schedule.resolutions=[8, 16]") == {
        "schedule": {"resolutions": [8, 16]}
    }
    assert configuration.parse_override("data.path=/a/b c") == {"data": {"path": "/a/b c"}}
    assert configuration.parse_override("train.max_seconds=2") == {"train": {"max_seconds": 2}}


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("schedule.resolution=[16]", "valid keys here: adaptive, elites, evaluations"),
        ("bogus=1", "unknown key 'bogus'"),
        ("seed=1.5", "seed must be int"),
        ("search.population=true", "must be int"),
        ("data.filter=fancy", "use one of nearest, box"),
        ("search.strategy=annealing", "use one of ga, random"),
        ("schedule.resolutions=[64, 32]", "strictly increasing"),
        ("schedule.evaluations=[10, 5]", "3 stages but schedule.evaluations has 2"),
        ("space.learning_rate=[1.0, 0.001]", "learning_rate"),
        ("train.patience=0", "train.patience must be >= 1"),
        ("fitness.function=nocolon", "package.module:function"),
        ("data=3", "[data] is a section"),
        ("noequals", "section.key=value"),
        ("schedule.probe=-1", "schedule.probe must be a whole number >= 0"),
        ("schedule.probe=2.5", "must be int"),
        ("schedule.fidelity_threshold=1.5", "rank correlation in [-1, 1]"),
        ("schedule.adaptive=yes", "must be bool"),
    ],
)
def test_bad_values_name_the_problem(override, fragment):
    with pytest.raises(ConfigError, match=None) as caught:
        configuration.load(overrides=[override])
    assert fragment in str(caught.value)


def test_the_adaptive_ladder_needs_the_probe():
    with pytest.raises(ConfigError, match="schedule.adaptive needs the fidelity probe"):
        configuration.load(overrides=["schedule.probe=0", "schedule.adaptive=true"])
    config = configuration.load(overrides=["schedule.adaptive=true"])
    assert config["schedule"]["probe"] == 8 and config["schedule"]["fidelity_threshold"] == 0.3


def test_not_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        configuration.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        configuration.load(tmp_path / "absent.toml")


def test_first_stage_must_hold_a_population():
    with pytest.raises(ConfigError, match="at least one whole population"):
        configuration.load(overrides=["schedule.evaluations=[4, 4, 4]", "search.population=8"])


def test_embedded_data_cuts_only_the_ranges_left_unset(tmp_path):
    embedded = configuration.load()
    assert embedded["space"]["conv_filters"] == [8, 64]
    assert embedded["space"]["conv_kernels"] == [3, 5]
    chosen = configuration.load(overrides=["space.conv_filters=[8, 256]"])
    assert chosen["space"]["conv_filters"] == [8, 256] and chosen["space"]["fc_units"] == [16, 256]
    (tmp_path / "cls_a").mkdir()
    user = configuration.load(overrides=[f"data.path={tmp_path}"])
    assert user["space"]["conv_filters"] == [8, 256]
    assert user["space"]["conv_kernels"] == [3, 5, 7]


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (['slurm.time="2"', "slurm.signal_seconds=100", "train.max_seconds=60"], "one evaluation"),
        (["stop.grace_seconds=200"], "killed during the grace period"),
        (["slurm.extra=[3]"], "slurm.extra must be a list of strings"),
    ],
)
def test_job_settings_that_cannot_work_are_refused(overrides, fragment):
    with pytest.raises(ConfigError) as caught:
        configuration.load(overrides=overrides)
    assert fragment in str(caught.value)


# --------------------------------------------------------------------------- [space] names

LEGACY_CONFIG = ROOT / "tests" / "data" / "legacy-runs" / "sync-stopped" / "config.toml"


def deprecations(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "evores" and r.levelname == "WARNING"
    ]


def test_the_space_section_uses_the_genomes_names():
    space = configuration.load()["space"]
    genes = "learning_rate conv_layers conv_filters conv_kernels fc_layers fc_units batch_size"
    assert list(space) == [*genes.split(), "l1", "l1_allow_zero", "l2", "l2_allow_zero"]


RENAMED = {"filters": "conv_filters", "kernel": "conv_kernels", "units": "fc_units"}


@pytest.mark.parametrize(
    "earlier, value", [("filters", [8, 256]), ("kernel", [3, 5, 7]), ("units", [32, 512])]
)
def test_an_earlier_space_name_in_set_is_read_with_one_line_of_deprecation(caplog, earlier, value):
    name = RENAMED[earlier]
    config = configuration.load(overrides=[f"space.{earlier}={value}"])
    assert config["space"][name] == value and earlier not in config["space"]
    assert deprecations(caplog) == [
        f"--set space.{earlier}={value}: space.{earlier} is deprecated; use space.{name}"
    ]


def test_an_earlier_space_name_in_a_file_counts_as_given(tmp_path, caplog):
    path = tmp_path / "run.toml"
    path.write_text("[space]\nkernel = [3, 5, 7]\n")
    config = configuration.load(path)
    assert config["space"]["conv_kernels"] == [3, 5, 7]  # not cut to the embedded [3, 5]
    assert config["space"]["conv_filters"] == [8, 64]
    (message,) = deprecations(caplog)
    assert str(path) in message and "space.kernel" in message and "space.conv_kernels" in message


def test_a_refused_config_is_the_error_alone_without_deprecation_lines(caplog):
    with pytest.raises(ConfigError, match="conv_filters"):
        configuration.load(overrides=["space.filters=[64, 8]"])
    assert deprecations(caplog) == []


def test_both_names_of_a_gene_in_one_file_is_one_line_error(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[space]\nunits = [16, 64]\nfc_units = [16, 128]\n")
    with pytest.raises(ConfigError) as caught:
        configuration.load(path)
    message = str(caught.value)
    assert "'units' and 'fc_units'" in message and "\n" not in message


def test_a_run_directorys_config_under_the_earlier_names_resolves_as_before(tmp_path, caplog):
    stored = tomllib.loads(LEGACY_CONFIG.read_text())["space"]
    config = configuration.load(LEGACY_CONFIG)
    assert len(deprecations(caplog)) == 3
    for earlier, name in RENAMED.items():
        assert config["space"][name] == stored[earlier]
    rewritten = tmp_path / "config.toml"
    rewritten.write_text(configuration.to_toml(config))
    caplog.clear()
    assert configuration.load(rewritten) == config and deprecations(caplog) == []


# --------------------------------------------------------------------------- [slurm]


def test_slurm_settings_fill_in_defaults_and_keep_given_values():
    assert configuration.slurm_settings(None) == configuration.SLURM_DEFAULTS
    chosen = configuration.slurm_settings({"nodes": 2, "extra": ["--qos=high"]})
    assert chosen == {**configuration.SLURM_DEFAULTS, "nodes": 2, "extra": ["--qos=high"]}
    assert configuration.SLURM_DEFAULTS["extra"] == []  # the defaults are not shared


@pytest.mark.parametrize(
    "section, words",
    [
        ({"node": 2}, "unknown key 'slurm.node'"),
        ({"nodes": "2"}, "slurm.nodes must be int"),
        ({"nodes": True}, "slurm.nodes must be int"),
        ({"nodes": 0}, "slurm.nodes must be >= 1"),
        ({"gpus_per_node": -1}, "slurm.gpus_per_node must be >= 0"),
        ({"time": "1h"}, "slurm.time '1h'"),
        ({"time": "00:01:00", "signal_seconds": 60}, "slurm.signal_seconds = 60"),
        ({"extra": ["-p gpu"]}, "slurm.extra entry '-p gpu'"),
        ({"extra": "--qos=high"}, "slurm.extra must be a list of strings"),
        ({"gpus_per_node": 2, "workers_per_node": 3}, "slurm.workers_per_node = 3 exceeds"),
    ],
)
def test_bad_slurm_settings_are_one_line_alone_and_in_a_config(section, words):
    with pytest.raises(ConfigError) as caught:
        configuration.slurm_settings(section)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    overrides = [f"slurm.{key}={configuration.to_toml_value(v)}" for key, v in section.items()]
    with pytest.raises(ConfigError, match=words.replace("'", ".")):
        configuration.load(overrides=overrides)


@pytest.mark.parametrize(
    "text, seconds",
    [("90", 5400), ("1:30", 90), ("01:00:00", 3600), ("2-0", 172800), ("1-0:0:1", 86401)],
)
def test_walltime_formats(text, seconds):
    assert configuration.walltime_seconds(text) == seconds


@pytest.mark.parametrize("text", ["0", "00:00:00", "1h", "1:2:3:4", ""])
def test_walltime_that_is_not_a_positive_slurm_time(text):
    with pytest.raises(ConfigError, match="not a positive SLURM time"):
        configuration.walltime_seconds(text)


def test_the_readme_documents_every_space_key_with_its_default():
    from evores.strategies.space import SearchSpace

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    defaults = SearchSpace().to_dict()
    assert tomllib.loads(block)["space"] == defaults
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `")]
    table = {}
    for key, _, default, _ in rows:
        table[key.strip(" `")] = tomllib.loads(f"value = {default.strip(' `')}")["value"]
    assert table == defaults


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_any_string_survives_the_toml_round_trip(text):
    """An emoji in data.path once became a surrogate pair TOML refuses (issue 23, class 16)."""
    assert tomllib.loads(f"value = {configuration.to_toml_value(text)}")["value"] == text


def test_a_config_with_characters_beyond_the_bmp_resolves_and_reads_back(tmp_path):
    config = configuration.load(values={"data": {"path": "embedded"}, "slurm": {"account": "🧪"}})
    path = tmp_path / "config.toml"
    path.write_text(configuration.to_toml(config), encoding="utf-8")
    assert configuration.load(path) == config


@pytest.mark.parametrize(
    "text",
    ["seed = 1" + "0" * 5000, "x = " + "[" * 100_000 + "]" * 100_000, b"seed = '\xff'"],
    ids=["a 5000-digit number", "deep nesting", "invalid UTF-8"],
)
def test_a_config_file_of_hostile_text_is_one_line(tmp_path, text):
    path = tmp_path / "hostile.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match="is not valid TOML") as caught:
        configuration.load(path)
    assert "\n" not in str(caught.value)


def test_a_set_value_past_the_digit_limit_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="seed must be int") as caught:
        configuration.load(overrides=["seed=1" + "0" * 5000])
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300
