from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from helios_core.config import (
    AtlasConfig,
    HeliosConfig,
    LogConfig,
    config_to_dict,
    load_config,
    schema_keys,
)
from helios_core.errors import ConfigError

DEFAULT_YAML = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "helios.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    cfg = load_config(env={})
    assert cfg == HeliosConfig()
    assert cfg.log == LogConfig(level="info", format="console")
    assert cfg.atlas.appendfsync == "always"
    assert cfg.atlas.aof_truncate_torn_tail is True
    assert cfg.atlas.max_value_bytes == 536870912
    assert cfg.atlas.save == ((3600, 1), (300, 100), (60, 10000))
    assert cfg.atlas.snapshot_on_aof_bytes == 67108864
    assert cfg.atlas.active_expire_hz == 10
    assert cfg.atlas.active_expire_budget == 200


def test_sections_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        HeliosConfig().atlas.appendfsync = "no"  # type: ignore[misc]


def test_yaml_overrides_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "log:\n  level: debug\natlas:\n  appendfsync: everysec\n  save: ['60 1000', '10 5']\n",
    )
    cfg = load_config(path, env={})
    assert cfg.log.level == "debug"
    assert cfg.log.format == "console"
    assert cfg.atlas.appendfsync == "everysec"
    assert cfg.atlas.save == ((60, 1000), (10, 5))
    assert cfg.atlas.max_value_bytes == 536870912


def test_empty_save_list_disables_snapshots(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "atlas:\n  save: []\n"), env={}).atlas.save == ()


def test_empty_file_and_empty_section_mean_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}) == HeliosConfig()
    assert load_config(write(tmp_path, "atlas:\n"), env={}) == HeliosConfig()


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "atlas:\n  appendfsync: everysec\n  active_expire_hz: 20\n")
    env = {
        "HELIOS_ATLAS__APPENDFSYNC": "no",
        "HELIOS_ATLAS__AOF_TRUNCATE_TORN_TAIL": "no",
        "HELIOS_ATLAS__SAVE": "60 1000,300 10",
        "HELIOS_CONFIG": "/ignored/not/a/setting.yaml",
        "UNRELATED": "x",
    }
    cfg = load_config(path, env=env)
    assert cfg.atlas.appendfsync == "no"
    assert cfg.atlas.aof_truncate_torn_tail is False
    assert cfg.atlas.save == ((60, 1000), (300, 10))
    assert cfg.atlas.active_expire_hz == 20


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("YES", True), ("1", True), ("0", False)])
def test_env_bool_spellings(text: str, expected: bool) -> None:
    cfg = load_config(env={"HELIOS_ATLAS__AOF_TRUNCATE_TORN_TAIL": text})
    assert cfg.atlas.aof_truncate_torn_tail is expected


def test_env_empty_save_disables() -> None:
    assert load_config(env={"HELIOS_ATLAS__SAVE": ""}).atlas.save == ()


def test_overrides_beat_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "atlas:\n  appendfsync: everysec\nlog:\n  format: json\n")
    env = {"HELIOS_ATLAS__APPENDFSYNC": "always", "HELIOS_LOG__LEVEL": "warn"}
    cfg = load_config(
        path,
        env=env,
        overrides={"atlas.appendfsync": "no", "atlas.active_expire_hz": "50", "log.level": None},
    )
    assert cfg.atlas.appendfsync == "no"
    assert cfg.atlas.active_expire_hz == 50
    assert cfg.log.level == "warn"  # None means "option not given"
    assert cfg.log.format == "json"


def test_unknown_key_names_file_line_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "log:\n  level: info\natlas:\n  appendfsync: always\n  apendfsync: no\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), 5, "atlas.apendfsync")
    assert f"{path}:5" in str(err)
    assert "did you mean 'appendfsync'" in str(err)


def test_unknown_section_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'atlas'") as info:
        load_config(write(tmp_path, "atlass:\n  appendfsync: always\n"), env={})
    assert info.value.line == 1


def test_setting_at_top_level_suggests_its_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'atlas.appendfsync'"):
        load_config(write(tmp_path, "appendfsync: always\n"), env={})


def test_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected an integer, got string '10'") as info:
        load_config(write(tmp_path, "atlas:\n  active_expire_hz: '10'\n"), env={})
    assert (info.value.line, info.value.key) == (2, "atlas.active_expire_hz")


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected an integer, got boolean true"):
        load_config(write(tmp_path, "atlas:\n  max_value_bytes: true\n"), env={})


def test_int_is_not_a_bool(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a boolean"):
        load_config(write(tmp_path, "atlas:\n  aof_truncate_torn_tail: 1\n"), env={})


def test_bad_choice_lists_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected one of: always, everysec, no") as info:
        load_config(write(tmp_path, "atlas:\n  appendfsync: sometimes\n"), env={})
    assert info.value.key == "atlas.appendfsync"


def test_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="above the maximum 500"):
        load_config(write(tmp_path, "atlas:\n  active_expire_hz: 501\n"), env={})
    with pytest.raises(ConfigError, match="below the minimum 1"):
        load_config(write(tmp_path, "atlas:\n  save: ['60 0']\n"), env={})


def test_bad_save_item_points_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "atlas:\n  save:\n    - '60 1000'\n    - 'sixty 10'\n")
    with pytest.raises(ConfigError, match="expected an integer") as info:
        load_config(path, env={})
    assert info.value.line == 4


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_config(write(tmp_path, "atlas:\n  appendfsync: [always\n"), env={})
    assert info.value.file is not None and info.value.line is not None


def test_env_error_names_variable() -> None:
    with pytest.raises(ConfigError, match="HELIOS_ATLAS__ACTIVE_EXPIRE_HZ") as info:
        load_config(env={"HELIOS_ATLAS__ACTIVE_EXPIRE_HZ": "fast"})
    assert info.value.file is None and info.value.line is None
    assert info.value.key == "atlas.active_expire_hz"


def test_env_unknown_key_names_variable_and_suggests() -> None:
    with pytest.raises(ConfigError, match="HELIOS_ATLAS__APPENDSYNC.*did you mean 'appendfsync'"):
        load_config(env={"HELIOS_ATLAS__APPENDSYNC": "no"})


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match="did you mean 'level'"):
        load_config(env={}, overrides={"log.levle": "debug"})


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(missing, env={})
    assert str(missing) in str(info.value)


def test_constructing_a_bad_section_raises() -> None:
    with pytest.raises(ConfigError, match="atlas.appendfsync"):
        AtlasConfig(appendfsync="sometimes")


def test_default_yaml_matches_schema() -> None:
    assert load_config(DEFAULT_YAML, env={}) == HeliosConfig()
    doc = YAML(typ="safe").load(DEFAULT_YAML.read_text(encoding="utf-8"))
    present = [f"{section}.{key}" for section, body in doc.items() for key in body]
    assert sorted(present) == sorted(schema_keys())


def test_every_setting_is_documented() -> None:
    defaults = HeliosConfig()
    for section in dataclasses.fields(defaults):
        for f in dataclasses.fields(getattr(defaults, section.name)):
            assert f.metadata.get("doc"), f"{section.name}.{f.name} has no doc"


def test_config_to_dict_round_trips(tmp_path: Path) -> None:
    cfg = load_config(env={}, overrides={"atlas.save": "5 1", "log.format": "json"})
    data = config_to_dict(cfg)
    assert data["atlas"]["save"] == ["5 1"]
    path = tmp_path / "dumped.yaml"
    with path.open("w", encoding="utf-8") as out:
        YAML().dump(data, out)
    assert load_config(path, env={}) == cfg
