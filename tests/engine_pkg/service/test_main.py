"""`python -m engine_pkg` with settings that cannot run: exit code 2 and one `event=bad_config`
line naming the variable, no traceback (as the streamer, docs/engine_service.md)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(("var", "value", "says"), [
    ("ENGINE_HTTP_PORT", "abc", "ENGINE_HTTP_PORT must be a whole number, got 'abc'"),
    ("ENGINE_HTTP_PORT", "70000", "ENGINE_HTTP_PORT must be a whole number from 0 to 65535, got '70000'"),
    ("ENGINE_SNAPSHOT_SECONDS", "soon", "ENGINE_SNAPSHOT_SECONDS must be a number, got 'soon'"),
    ("CACHE_CLUSTER_MODE", "maybe", "CACHE_CLUSTER_MODE must be one of"),
    ("DEPTH_CACHE_URL", "bogus://x", "Redis URL must specify one of the following schemes"),
])
def test_bad_configuration_exits_2_with_one_line_naming_it(var, value, says):
    env = {**os.environ, var: value, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "engine_pkg"], env=env, capture_output=True, text=True, timeout=60)
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2, out
    assert len(out) == 1 and "event=bad_config" in out[0] and says in out[0], out
