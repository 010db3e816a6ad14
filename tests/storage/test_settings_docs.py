"""The settings tables of the README and docs/ name real variables with their real defaults, and the
README's table lists every one (storage/settings.py declares them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actors.rl.sandbox import SandboxLimits
from storage.settings import Settings, variable

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (`RESIMHUB_[A-Z_]+`(?: / `RESIMHUB_[A-Z_]+`)*) \| ([^|]+) \|", re.MULTILINE)
MiB = 1024 * 1024
#: The sandbox settings default to None, meaning SandboxLimits' values, which the docs show.
SANDBOX = {"sandbox_memory_mb": SandboxLimits.memory_bytes // MiB, "sandbox_cpu_seconds": SandboxLimits.cpu_seconds,
           "sandbox_load_timeout_s": SandboxLimits.load_timeout_s,
           "sandbox_step_timeout_s": SandboxLimits.step_timeout_s,
           "sandbox_evaluation_timeout_s": SandboxLimits.evaluation_timeout_s}
#: Defaults the docs give in words: none (the setting is unset, and what that means is described) ...
NONE = ("unset", "empty", "one per CPU", "console for")
#: ... or one derived from elsewhere (the data directory; the schedule, which docs/webhooks.md spells out).
DERIVED = ("SQLite in the data dir", "~a day")
FIELDS = {variable(name): name for name in Settings.model_fields}


def _rows(path: Path) -> list[tuple[str, str]]:
    """(variable, documented default) for every settings row of a markdown file."""
    found = []
    for names, defaults in ROW.findall(path.read_text()):
        names = [n.strip("`") for n in names.split(" / ")]
        values = [d.strip() for d in defaults.split(" / ")] if len(names) > 1 else [defaults.strip()]
        assert len(values) == len(names), f"{path.name}: {names} with defaults {defaults!r}"
        found += zip(names, values, strict=True)
    return found


def _documented(cell: str):
    """What a default cell says, as a value (None for no value), or DERIVED."""
    text = cell.replace("`", "")
    if text.startswith(DERIVED):
        return DERIVED
    if text.startswith(NONE):
        return None
    if text in ("0", "off", "1", "on"):
        return text in ("1", "on")
    number = re.match(r"^(\d+(?:\.\d+)?)( MiB)?(?: \(.*\))?$", text)
    if number:
        return float(number.group(1)) * (MiB if number.group(2) else 1)
    if re.fullmatch(r"[\d.]+(,[\d.]+)+", text):
        return tuple(float(part) for part in text.split(","))
    return Path(text) if text.startswith("./") else text


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_documented_variables_exist_with_their_defaults(path):
    for name, cell in _rows(path):
        assert name in FIELDS, f"{path.name} documents {name}, which is no setting"
        field = FIELDS[name]
        said = _documented(cell)
        actual = SANDBOX.get(field, Settings.model_fields[field].default)
        if said is not DERIVED:
            assert said == actual or (said is None and actual in ("", ())), \
                f"{path.name}: {name} is documented as {cell!r}, its default is {actual!r}"


def test_the_readme_lists_every_setting():
    documented = {name for name, _ in _rows(ROOT / "README.md")}
    assert sorted(set(FIELDS) - documented) == []
