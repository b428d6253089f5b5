"""`tools/provision.py --stage NAME` against the local emulators (kinesalite, dynalite, moto S3).

Each test provisions a stage of its own (the prod stage of .chalice/config.json with every
resource name made unique), so runs never see each other's resources.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from chalice_app.config import Settings
from tools.provision import ProvisionError, main, plan_for, provision, settings_for_stage, stage_placeholders

REPO = Path(__file__).resolve().parents[2]
CONFIG = json.loads((REPO / ".chalice" / "config.json").read_text())
NAME_KEYS = ("KINESIS_ORDERS_STREAM", "KINESIS_FILLS_STREAM", "KINESIS_STATUS_STREAM", "DYNAMODB_TABLE",
             "CANDLE_TABLE", "BACKUP_BUCKET")


@pytest.fixture
def stage(service_env, tmp_path) -> tuple[str, Path, dict[str, str]]:
    """A copy of the config with one extra stage: prod with unique resource names."""
    suffix = uuid.uuid4().hex[:8]
    config = json.loads(json.dumps(CONFIG))
    env = dict(config["stages"]["prod"]["environment_variables"])
    for key in NAME_KEYS:
        env[key] = f"{env[key].replace('change-me', 'x')}-t{suffix}"
    name = f"t{suffix}"
    config["stages"][name] = {**config["stages"]["prod"], "environment_variables": env}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return name, path, env


def _run(*args: str, as_process: bool = False) -> subprocess.CompletedProcess:
    """The CLI, in a child process (as an operator runs it) or in process (faster)."""
    if as_process:
        return subprocess.run([sys.executable, "-m", "tools.provision", *args], cwd=REPO, env=dict(os.environ),
                              capture_output=True, text=True, timeout=120)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = exc.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _state(aws: boto3.Session, env: dict[str, str]) -> dict:
    """What exists of the stage's resources, with fields that change when a resource is recreated."""
    kinesis, ddb, s3 = aws.client("kinesis"), aws.client("dynamodb"), aws.client("s3")
    state: dict = {}
    for key in NAME_KEYS[:3]:
        try:
            desc = kinesis.describe_stream_summary(StreamName=env[key])["StreamDescriptionSummary"]
            state[key] = (desc["StreamStatus"], desc["OpenShardCount"], desc["StreamCreationTimestamp"])
        except ClientError:
            state[key] = None
    for key in NAME_KEYS[3:5]:
        try:
            table = ddb.describe_table(TableName=env[key])["Table"]
            state[key] = (table["TableStatus"], table["BillingModeSummary"]["BillingMode"],
                          tuple((k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]),
                          table["CreationDateTime"])
        except ClientError:
            state[key] = None
    bucket = env["BACKUP_BUCKET"]
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        state["BACKUP_BUCKET"] = None
    else:
        state["BACKUP_BUCKET"] = (
            s3.get_bucket_versioning(Bucket=bucket).get("Status"),
            s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
            ["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"],
            s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
        )
    return state


def test_dry_run_changes_nothing_then_provision_creates_everything_then_is_idempotent(aws, stage):
    name, path, env = stage
    dry = _run("--stage", name, "--config", str(path), "--dry-run", as_process=True)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would create") == 6, dry.stdout
    assert all(v is None for v in _state(aws, env).values()), "--dry-run created something"

    first = _run("--stage", name, "--config", str(path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(": created") == 6, first.stdout
    state = _state(aws, env)
    assert state["KINESIS_ORDERS_STREAM"][:2] == ("ACTIVE", 4)
    assert state["KINESIS_FILLS_STREAM"][:2] == ("ACTIVE", 2)
    assert state["KINESIS_STATUS_STREAM"][:2] == ("ACTIVE", 2)
    assert state["DYNAMODB_TABLE"][:3] == ("ACTIVE", "PAY_PER_REQUEST", (("pk", "HASH"), ("sk", "RANGE")))
    assert state["CANDLE_TABLE"][:3] == ("ACTIVE", "PAY_PER_REQUEST", (("pk", "HASH"), ("sk", "RANGE")))
    versioning, sse, block = state["BACKUP_BUCKET"]
    assert versioning == "Enabled" and sse == "AES256"
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                     "RestrictPublicBuckets": True}
    # the stage's names were used, and the operator is told which values are still placeholders
    assert env["KINESIS_ORDERS_STREAM"] in first.stdout and env["BACKUP_BUCKET"] in first.stdout
    assert "warning: stage" in first.stdout and "DEPTH_CACHE_HOST" in first.stdout

    second = _run("--stage", name, "--config", str(path))
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout and "turned on" not in second.stdout
    assert second.stdout.count(": exists") == 6, second.stdout
    assert _state(aws, env) == state, "a second run changed existing resources"

    dry_again = _run("--stage", name, "--config", str(path), "--dry-run")
    assert dry_again.returncode == 0 and "would" not in dry_again.stdout, dry_again.stdout


def test_repairs_a_bucket_missing_its_settings_and_dry_run_only_reports_it(aws, stage):
    name, path, env = stage
    s3 = aws.client("s3")
    bucket = env["BACKUP_BUCKET"]
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-2"})

    dry = _run("--stage", name, "--config", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"bucket {bucket}: exists, would turn on versioning" in dry.stdout
    assert "public access block" in dry.stdout
    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") is None

    fixed = _run("--stage", name, "--config", str(path))
    assert fixed.returncode == 0, fixed.stderr
    assert f"bucket {bucket}: exists, turned on versioning" in fixed.stdout
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())


def test_table_with_another_key_schema_is_a_clear_error(aws, stage):
    name, path, env = stage
    aws.client("dynamodb").create_table(
        TableName=env["DYNAMODB_TABLE"], BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    proc = _run("--stage", name, "--config", str(path))
    assert proc.returncode == 1
    assert f"table {env['DYNAMODB_TABLE']} exists with keys" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_stream_with_other_shard_count_is_reported_not_touched(aws, stage):
    name, path, env = stage
    kinesis = aws.client("kinesis")
    kinesis.create_stream(StreamName=env["KINESIS_ORDERS_STREAM"], ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=env["KINESIS_ORDERS_STREAM"], WaiterConfig={"Delay": 0.2})
    proc = _run("--stage", name, "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert f"stream {env['KINESIS_ORDERS_STREAM']}: exists with 1 shards, plan says 4" in proc.stdout
    summary = kinesis.describe_stream_summary(StreamName=env["KINESIS_ORDERS_STREAM"])["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 1


def test_unknown_stage_and_bad_config_are_clear_errors(tmp_path, service_env):
    proc = _run("--stage", "nope")
    assert proc.returncode == 1
    assert "stage 'nope' is not in" in proc.stderr and "dev, local, prod" in proc.stderr
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    proc = _run("--stage", "dev", "--config", str(bad))
    assert proc.returncode == 1 and "is not valid JSON" in proc.stderr
    assert _run("--help").stdout.count("--stage") >= 1


def test_real_stages_plan_their_own_names(service_env):
    for stage_name in ("dev", "prod"):
        env = CONFIG["stages"][stage_name]["environment_variables"]
        settings = settings_for_stage(stage_name)
        plan = plan_for(settings)
        assert set(plan.streams) == {env["KINESIS_ORDERS_STREAM"], env["KINESIS_FILLS_STREAM"],
                                     env["KINESIS_STATUS_STREAM"]}
        assert plan.streams[env["KINESIS_ORDERS_STREAM"]] == 4
        assert set(plan.tables) == {env["DYNAMODB_TABLE"], env["CANDLE_TABLE"]}
        assert plan.bucket == env["BACKUP_BUCKET"]
        # endpoints and credentials still come from the process environment
        assert settings.extra["AWS_ENDPOINT_URL_KINESIS"] == os.environ["AWS_ENDPOINT_URL_KINESIS"]
        assert {"DEPTH_CACHE_HOST", "WEBSOCKET_ENDPOINT", "subnet_ids"} <= set(stage_placeholders(stage_name))
    assert stage_placeholders("local") == []


def test_shard_counts_come_from_the_environment_and_are_checked():
    base = {"KINESIS_ORDERS_SHARDS": "8", "KINESIS_FILLS_SHARDS": "3"}
    plan = plan_for(Settings.from_env(base))
    assert plan.streams == {"supernoba-orders": 8, "supernoba-fills": 3, "supernoba-order-status": 2}
    with pytest.raises(ProvisionError, match="KINESIS_ORDERS_SHARDS"):
        plan_for(Settings.from_env({"KINESIS_ORDERS_SHARDS": "0"}))
    with pytest.raises(ProvisionError, match="whole number"):
        plan_for(Settings.from_env({"KINESIS_STATUS_SHARDS": "two"}))


def test_in_process_dry_run_returns_the_plan_lines(aws, stage):
    _name, path, env = stage
    settings = settings_for_stage(_name, path)
    lines = provision(settings, dry_run=True, session=aws)
    assert len(lines) == 6 and all("would create" in line for line in lines)
    assert all(v is None for v in _state(aws, env).values())


def test_a_policy_left_on_the_old_bucket_is_reported(tmp_path):
    """docs/deploy.md step 3 renames BACKUP_BUCKET: the stage's IAM policy must follow."""
    src = Path(__file__).resolve().parents[2] / ".chalice"
    cfg = json.loads((src / "config.json").read_text())
    cfg["stages"]["prod"]["environment_variables"]["BACKUP_BUCKET"] = "supernoba-backup-prod-123456789012"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    policy = (src / "policy-prod.json").read_text()
    (tmp_path / "policy-prod.json").write_text(policy)
    left = stage_placeholders("prod", tmp_path / "config.json")
    assert any(item.startswith("policy-prod.json (S3 bucket supernoba-backup-prod-change-me") for item in left), left
    (tmp_path / "policy-prod.json").write_text(policy.replace("supernoba-backup-prod-change-me",
                                                              "supernoba-backup-prod-123456789012"))
    assert not any(item.startswith("policy-prod.json") for item in stage_placeholders("prod", tmp_path / "config.json"))
