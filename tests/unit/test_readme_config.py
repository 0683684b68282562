"""README's "Configuration reference" names every key of configs/default.yaml, and nothing else.

Keys are the flattened dotted paths (`gateway.port`, `atlas.appendfsync`); a list value (`atlas.save`)
is one key. A key added to default.yaml without a row in the README fails here, and so does a row
left behind for a key that is gone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
HEADING = re.compile(r"^(#+)\s+Configuration reference\s*$")
ROW_KEY = re.compile(r"^\|\s*`([a-z_]+(?:\.[a-z_0-9]+)+)`\s*\|")


def flatten(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, value in tree.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            out += flatten(value, path + ".")
        else:
            out.append(path)
    return out


def default_keys() -> list[str]:
    with open(ROOT / "configs" / "default.yaml") as f:
        return flatten(YAML(typ="safe").load(f))


def reference_section() -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if m is None:
            continue
        level = len(m.group(1))
        body: list[str] = []
        in_code = False
        for following in lines[i + 1:]:
            if following.startswith("```"):
                in_code = not in_code
            heading = re.match(r"^(#+)\s", following)
            if heading and not in_code and len(heading.group(1)) <= level:
                break
            body.append(following)
        return "\n".join(body)
    raise AssertionError('README.md has no "Configuration reference" heading')


def test_default_yaml_flattens_to_dotted_keys() -> None:
    keys = default_keys()
    assert "gateway.port" in keys and "atlas.appendfsync" in keys and "atlas.save" in keys
    assert len(keys) == len(set(keys))


def test_every_default_key_is_documented() -> None:
    section = reference_section()
    missing = [k for k in default_keys() if f"`{k}`" not in section]
    assert not missing, f"configs/default.yaml keys missing from README's Configuration reference: {missing}"


def test_every_documented_row_is_a_real_key() -> None:
    keys = set(default_keys())
    rows = [m.group(1) for line in reference_section().splitlines() if (m := ROW_KEY.match(line))]
    assert rows, "the Configuration reference has no table rows"
    stale = [k for k in rows if k not in keys]
    assert not stale, f"README documents keys configs/default.yaml does not have: {stale}"
    assert len(rows) == len(set(rows)), "a key has two rows"


def test_rows_name_the_environment_variable() -> None:
    """Each row gives HELIOS_<SECTION>__<KEY>, the form operators set in containers and units."""
    for line in reference_section().splitlines():
        if m := ROW_KEY.match(line):
            section, _, rest = m.group(1).partition(".")
            env = f"HELIOS_{section.upper()}__{rest.upper().replace('.', '__')}"
            assert f"`{env}`" in line, f"row for {m.group(1)} lacks {env}"
