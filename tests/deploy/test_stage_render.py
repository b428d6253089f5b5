"""tools/stage_render.py: the EC2 environment files and role policies of a stage carry the
stage's names, so the engine and streamer talk to the same streams as its functions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools.stage_render import main, render_env, render_policy

REPO = Path(__file__).resolve().parents[2]
CONFIG = json.loads((REPO / ".chalice" / "config.json").read_text())
NAMES = ("KINESIS_ORDERS_STREAM", "KINESIS_FILLS_STREAM", "KINESIS_STATUS_STREAM")


def test_prod_rendering_is_the_shipped_files():
    for part in ("engine", "streamer"):
        assert json.loads(render_policy(part, "prod")) == json.loads(
            (REPO / "deploy" / "iam" / f"ec2-{part}-policy.json").read_text())


@pytest.mark.parametrize("part", ["engine", "streamer"])
def test_dev_policy_names_only_dev_resources(part):
    dev, prod = (CONFIG["stages"][s] for s in ("dev", "prod"))
    text = render_policy(part, "dev")
    policy = json.loads(text)
    resources = [r for st in policy["Statement"] for r in (st["Resource"] if isinstance(st["Resource"], list)
                                                          else [st["Resource"]])]
    for key in NAMES:
        assert not any(r.endswith(f"stream/{prod['environment_variables'][key]}") for r in resources)
    if part == "engine":
        for key in NAMES:
            assert any(r.endswith(f"stream/{dev['environment_variables'][key]}") for r in resources), key
    else:
        assert any(f"/{dev['api_gateway_stage']}/*/@connections/" in r for r in resources)
        assert not any(f"/{prod['api_gateway_stage']}/" in r for r in resources)


def test_dev_env_file_has_the_stage_values_and_reads_like_systemd(tmp_path):
    env = CONFIG["stages"]["dev"]["environment_variables"]
    path = tmp_path / "engine.env"
    path.write_text(render_env("engine", "dev"))
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$KINESIS_ORDERS_STREAM" "$DYNAMODB_TABLE" "$REDIS_HOST" "$ENGINE_HTTP_PORT"\n')
    fake.chmod(0o755)
    proc = subprocess.run([str(REPO / "tools" / "run_engine.sh"), "--env-file", str(path)],
                          env={"PATH": "/usr/bin:/bin", "SUPERNOBA_PYTHON": str(fake)},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [env["KINESIS_ORDERS_STREAM"], env["DYNAMODB_TABLE"], env["REDIS_HOST"], "9100"]
    streamer = render_env("streamer", "dev")
    assert f"WEBSOCKET_ENDPOINT={env['WEBSOCKET_ENDPOINT']}\n" in streamer


def test_unknown_stage_is_a_clear_error(capsys):
    assert main(["--stage", "nope", "env", "engine"]) == 1
    assert "stage 'nope' is not in" in capsys.readouterr().err


def test_a_stage_with_cache_urls_gets_them_in_its_env_files(tmp_path):
    """SPEC §8: *_URL wins over *_HOST. The examples name the URLs only in comments, so a stage
    that sets them (one cache, two databases) must still get them rendered."""
    config = json.loads((REPO / ".chalice" / "config.json").read_text())
    env = config["stages"]["dev"]["environment_variables"]
    env["DEPTH_CACHE_URL"] = "redis://dev-cache.example:6379/0"
    env["BACKUP_CACHE_URL"] = "redis://dev-cache.example:6379/1"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    engine = render_env("engine", "dev", path)
    assert "\nDEPTH_CACHE_URL=redis://dev-cache.example:6379/0\n" in engine
    assert "\nBACKUP_CACHE_URL=redis://dev-cache.example:6379/1\n" in engine
    streamer = render_env("streamer", "dev", path)
    assert "\nDEPTH_CACHE_URL=redis://dev-cache.example:6379/0\n" in streamer and "BACKUP_CACHE_URL=" not in streamer
    assert "\nDEPTH_CACHE_URL=" not in render_env("engine", "dev")  # the shipped dev stage sets none


def test_deploy_guide_gives_the_ec2_roles_the_policies_of_its_stage(tmp_path):
    """docs/deploy.md step 7's role loop, run for STAGE=dev with a stand-in `aws`: each role's
    inline policy names dev's streams and API Gateway stage, not the prod files of deploy/iam/."""
    text = (REPO / "docs" / "deploy.md").read_text()
    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "put-role-policy" in b]
    stub = tmp_path / "bin" / "aws"
    stub.parent.mkdir()
    stub.write_text('#!/bin/bash\nif [ "$2" = put-role-policy ]; then\n'
                    '  for a in "$@"; do case "$a" in file://*) cp "${a#file://}" "$OUT/$4.json" ;; esac; done\nfi\n')
    stub.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    script = block.replace("/tmp/", f"{tmp_path}/").replace(".venv/bin/python", sys.executable)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={"PATH": f"{stub.parent}:/usr/bin:/bin", "STAGE": "dev", "OUT": str(out)})
    assert proc.returncode == 0, proc.stderr
    dev, prod = (CONFIG["stages"][s] for s in ("dev", "prod"))
    engine = json.loads((out / "supernoba-dev-engine.json").read_text())
    streamer = json.loads((out / "supernoba-dev-streamer.json").read_text())
    resources = [r for st in engine["Statement"] for r in (st["Resource"] if isinstance(st["Resource"], list)
                                                          else [st["Resource"]])]
    for key in NAMES:
        assert any(r.endswith(f"stream/{dev['environment_variables'][key]}") for r in resources), key
        assert not any(r.endswith(f"stream/{prod['environment_variables'][key]}") for r in resources), key
    (conn,) = [st["Resource"] for st in streamer["Statement"] if "execute-api:ManageConnections" in st["Action"]]
    assert f"/{dev['api_gateway_stage']}/" in conn and f"/{prod['api_gateway_stage']}/" not in conn
