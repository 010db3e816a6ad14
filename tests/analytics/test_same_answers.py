"""Every analytics endpoint answers what it answered before the DuckDB read path (the fixture and
the script that made it: tests/fixtures/analytics/)."""

import json
import math

from tests.fixtures.analytics.make_same_answers import FIXTURE, answers, build


def _same(got, want, path="") -> list[str]:
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{path}: keys {sorted(got) if isinstance(got, dict) else got!r} != {sorted(want)}"]
        return [d for k in want for d in _same(got[k], want[k], f"{path}.{k}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: {got!r} != {want!r}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True)) for d in _same(g, w, f"{path}[{i}]")]
    if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
        return [] if math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {got!r} != {want!r}"]
    return [] if got == want and type(got) is type(want) else [f"{path}: {got!r} != {want!r}"]


def test_every_endpoint_answers_as_before(tmp_path):
    want = json.loads(FIXTURE.read_text())
    folder = build(tmp_path / "snapshots")
    for read in ("first read", "read from the kept model statistics"):
        differences = _same(answers(folder), want)
        assert differences == [], (read, differences[:20])
