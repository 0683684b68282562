"""The config loader under random YAML files, HELIOS_* variables and overrides (helios_core/config.py).

Contract: a configuration either loads or raises `ConfigError` naming the
file (and line), variable or key; never another exception.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from helios_core.config import HeliosConfig, load_config, schema_keys
from helios_core.errors import ConfigError
from tests.fuzz.support import fuzz, fuzz_timeout

pytestmark = fuzz_timeout(120)

KEYS = schema_keys()
SECTIONS = sorted({k.split(".")[0] for k in KEYS})
yaml_scalar = st.one_of(
    st.sampled_from(["true", "no", "~", "null", "0", "-1", "1e400", ".nan", ".inf", "-.inf", "0x1F", "0o17",
                     "'quoted'", '"\\u0000"', "2024-01-01", "[]", "{}", "[1, 2]", '"60 1000"', "9" * 5000,
                     "*anchor", "&a 1", "!!binary aGk=", "!!python/object:os.system", "? x", "- 1", "|", ">"]),
    st.integers(-(2**70), 2**70).map(str),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
)
key = st.one_of(st.sampled_from(KEYS).map(lambda k: k.split(".")[1]), st.text(max_size=6))
section = st.one_of(st.sampled_from(SECTIONS), st.text(max_size=6))


def render(doc: list[tuple[str, list[tuple[str, str]]]]) -> str:
    lines = []
    for sec, items in doc:
        lines.append(f"{sec}:")
        lines += [f"  {k}: {v}" for k, v in items]
    return "\n".join(lines) + "\n"


yaml_doc = st.lists(st.tuples(section, st.lists(st.tuples(key, yaml_scalar), max_size=4)), max_size=3).map(render)


def load(text: str | bytes) -> HeliosConfig | None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "helios.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        try:
            return load_config(path, env={})
        except ConfigError as e:
            assert e.file == str(path) or str(path) in e.message or e.key, e.message
            return None


@fuzz(40)
@given(yaml_doc)
@example("atlas:\n  save: [[1, 2], 3]\n")
@example("atlas:\n  save: ['1 2', [3]]\n")
@example("a: &x [*x]\n")
@example("atlas:\n  appendfsync: !!binary aGk=\n")
@example("atlas:\n  appendfsync: always\n  appendfsync: no\n")
@example("? [a]\n: 1\n")
@example("atlas: {? [a] : 1}\n")
@example("tracing:\n  sample_ratio: .nan\n")
@example("atlas:\n  max_value_bytes: " + "9" * 5000 + "\n")  # ValueError from the YAML reader (fixed)
def test_any_yaml_file_loads_or_is_a_config_error(text: str) -> None:
    load(text)


@fuzz(50)
@given(st.binary(max_size=80))
@example(b"\xff\xfe")
@example(b"\x00")
@example(b"- a\n- b\n")
@example(b"%YAML 9.9\n---\n")
def test_random_bytes_as_a_config_file(blob: bytes) -> None:
    load(blob)


env_value = st.one_of(yaml_scalar, st.text(max_size=20))
env_name = st.one_of(st.sampled_from(KEYS).map(lambda k: "HELIOS_" + k.replace(".", "__").upper()),
                     st.text(alphabet="ABCZ_", max_size=10).map(lambda t: "HELIOS_" + t))


@fuzz(30)
@given(st.dictionaries(env_name, env_value, max_size=4))
@example({"HELIOS_ATLAS__SAVE": "1 2, 3"})
@example({"HELIOS_ATLAS__SAVE": "1 99999999999999999999999"})
@example({"HELIOS___": "x"})
@example({"HELIOS_TRACING__SAMPLE_RATIO": "nan"})
def test_any_environment_loads_or_is_a_config_error(env: dict[str, str]) -> None:
    try:
        load_config(None, env=env)
    except ConfigError as e:
        assert e.key or "environment variable" in e.message, e.message


@fuzz(40)
@given(st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)),
                       st.one_of(env_value, st.integers(), st.floats(), st.booleans(), st.lists(st.integers(),
                                                                                                max_size=3)),
                       max_size=3))
def test_any_overrides_load_or_are_a_config_error(overrides: dict) -> None:
    try:
        load_config(None, env={}, overrides=overrides)
    except ConfigError:
        pass
