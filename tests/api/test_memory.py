"""The gateway process's allocator settings (api.memory), checked in fresh interpreters since they
are process-wide."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = "import pyarrow as pa; from api.memory import tune_gateway_process, release_unused; " \
        "tune_gateway_process(); release_unused(); print(pa.default_memory_pool().backend_name)"


@pytest.mark.parametrize(("given", "expected"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_the_gateway_uses_the_system_pool_unless_the_operator_chose(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if given:
        env["ARROW_DEFAULT_MEMORY_POOL"] = given
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == expected
