"""Creates, idempotently, the AWS resources Supernoba needs (SPEC §7, §8).

Kinesis streams (orders 4 shards, fills 2, order-status 2 — override with
`KINESIS_ORDERS_SHARDS` / `KINESIS_FILLS_SHARDS` / `KINESIS_STATUS_SHARDS`), the DynamoDB
tables `trade_history` and `candle_history` (on demand, point-in-time recovery), and the
S3 backup bucket (versioned, encrypted, public access blocked) — against whatever
endpoints boto3 is configured for (the local emulators through `AWS_ENDPOINT_URL_*`, or
AWS itself). `--stage NAME` takes the resource names from that stage's
`environment_variables` in `.chalice/config.json`, so the tool creates exactly what the
deployed functions will use. Running it again changes nothing that is already right and
fixes what is missing (versioning, encryption, public access block, PITR); `--dry-run`
prints the plan and changes nothing.

    python -m tools.provision [--stage NAME] [--config PATH] [--dry-run]

Errors::

    ProvisionError           the stage or config file is unusable, or a resource exists
                             with an incompatible shape (e.g. another table key schema)
      (botocore ClientError is chained as __cause__ where AWS refused a call)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from chalice_app.config import ENV, Settings
from chalice_app.logs import setup_logging

log = logging.getLogger("supernoba.provision")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / ".chalice" / "config.json"
DEFAULT_SHARDS = {"KINESIS_ORDERS_SHARDS": 4, "KINESIS_FILLS_SHARDS": 2, "KINESIS_STATUS_SHARDS": 2}


class ProvisionError(RuntimeError):
    """Provisioning cannot go on; the message says what to fix."""


@dataclass(frozen=True)
class Plan:
    streams: dict[str, int]
    tables: dict[str, tuple[tuple[str, str], tuple[str, str]]]  # name -> ((pk, type), (sk, type))
    bucket: str


def _shards(settings: Settings, var: str) -> int:
    raw = settings.extra.get(var) or str(DEFAULT_SHARDS[var])
    try:
        count = int(raw)
    except ValueError as exc:
        raise ProvisionError(f"{var}={raw!r} is not a whole number of shards") from exc
    if count < 1:
        raise ProvisionError(f"{var}={count} must be at least 1")
    return count


def plan_for(settings: Settings) -> Plan:
    return Plan(
        streams={
            settings.orders_stream: _shards(settings, "KINESIS_ORDERS_SHARDS"),
            settings.fills_stream: _shards(settings, "KINESIS_FILLS_SHARDS"),
            settings.status_stream: _shards(settings, "KINESIS_STATUS_SHARDS"),
        },
        tables={
            settings.trade_table: (("pk", "S"), ("sk", "S")),
            settings.candle_table: (("pk", "S"), ("sk", "N")),
        },
        bucket=settings.backup_bucket,
    )


# --------------------------------------------------------------------------- stages


def stage_environment(stage: str, config_path: Path | str = DEFAULT_CONFIG) -> dict[str, str]:
    """The stage-level `environment_variables` of `stage` in a Chalice config file."""
    path = Path(config_path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ProvisionError(f"no Chalice config at {path}") from exc
    except json.JSONDecodeError as exc:
        raise ProvisionError(f"{path} is not valid JSON: {exc}") from exc
    stages = config.get("stages", {})
    if stage not in stages:
        raise ProvisionError(f"stage {stage!r} is not in {path} (stages: {', '.join(sorted(stages)) or 'none'})")
    env = {**config.get("environment_variables", {}), **stages[stage].get("environment_variables", {})}
    return {str(k): str(v) for k, v in env.items()}


_PLACEHOLDER_RE = re.compile(r"change-me|^(subnet|sg)-0+[1-9]?$")


def stage_placeholders(stage: str, config_path: Path | str = DEFAULT_CONFIG) -> list[str]:
    """Settings of `stage` that still hold the config's placeholders ("change-me", zero ids),
    and an IAM policy file whose S3 bucket is not the stage's BACKUP_BUCKET (renaming the
    bucket in config.json alone would leave the backup without write access)."""
    config = json.loads(Path(config_path).read_text())
    st = config.get("stages", {}).get(stage, {})
    found = [k for k, v in st.get("environment_variables", {}).items() if _PLACEHOLDER_RE.search(str(v))]
    for key in ("subnet_ids", "security_group_ids"):
        if any(_PLACEHOLDER_RE.search(str(v)) for v in st.get(key, [])):
            found.append(key)
    policy_file = st.get("iam_policy_file")
    bucket = stage_environment(stage, config_path).get(ENV.BACKUP_BUCKET)
    policy_path = Path(config_path).parent / policy_file if policy_file else None
    if policy_path is not None and policy_path.exists() and bucket:
        policy = policy_path.read_text()
        buckets = set(re.findall(r"arn:aws:s3:::([^/\"]+)", policy))
        if buckets and buckets != {bucket}:
            found.append(f"{policy_file} (S3 bucket {', '.join(sorted(buckets))}, not BACKUP_BUCKET {bucket})")
    return found


def settings_for_stage(stage: str, config_path: Path | str = DEFAULT_CONFIG,
                       base_env: Mapping[str, str] | None = None) -> Settings:
    """Settings of `stage`: the process environment (endpoints, credentials, region)
    overlaid with the stage's names from the Chalice config."""
    base = dict(os.environ if base_env is None else base_env)
    return Settings.from_env({**base, **stage_environment(stage, config_path)})


# --------------------------------------------------------------------------- resources


def _is_local(client) -> bool:
    return "amazonaws.com" not in (client.meta.endpoint_url or "")


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _ensure_stream(kinesis, name: str, shards: int, dry_run: bool) -> str:
    try:
        desc = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    except ClientError as exc:
        if _code(exc) != "ResourceNotFoundException":
            raise
    else:
        have = desc["OpenShardCount"]
        if desc["StreamStatus"] == "CREATING" and not dry_run:
            kinesis.get_waiter("stream_exists").wait(
                StreamName=name, WaiterConfig={"Delay": 0.2 if _is_local(kinesis) else 5})
        if have != shards:
            return (f"stream {name}: exists with {have} shards, plan says {shards} "
                    f"(left as is; reshard with `aws kinesis update-shard-count`)")
        return f"stream {name}: exists ({have} shards)"
    if dry_run:
        return f"stream {name}: would create with {shards} shards"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2 if _is_local(kinesis) else 5})
    return f"stream {name}: created with {shards} shards"


def _ensure_pitr(ddb, name: str, dry_run: bool) -> str:
    """Point-in-time recovery on; the local emulator (dynalite) has no such API."""
    if _is_local(ddb):
        return "PITR n/a on the local emulator"
    desc = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    status = desc.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
    if status == "ENABLED":
        return "PITR on"
    if dry_run:
        return "would turn PITR on"
    ddb.update_continuous_backups(
        TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    return "PITR turned on"


def _ensure_table(ddb, name: str, keys: tuple[tuple[str, str], tuple[str, str]], dry_run: bool) -> str:
    (pk, pkt), (sk, skt) = keys
    try:
        table = ddb.describe_table(TableName=name)["Table"]
    except ClientError as exc:
        if _code(exc) != "ResourceNotFoundException":
            raise
    else:
        schema = {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]}
        types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
        if schema != {pk: "HASH", sk: "RANGE"} or types.get(pk) != pkt or types.get(sk) != skt:
            raise ProvisionError(
                f"table {name} exists with keys {schema} {types}, expected {pk}({pkt}) HASH + {sk}({skt}) RANGE")
        if table.get("TableStatus") == "CREATING" and not dry_run:
            ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1 if _is_local(ddb) else 5})
        billing = table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
        return f"table {name}: exists ({'on demand' if billing == 'PAY_PER_REQUEST' else billing.lower()}, " \
               f"{_ensure_pitr(ddb, name, dry_run)})"
    if dry_run:
        return f"table {name}: would create (on demand, {'PITR n/a on the local emulator' if _is_local(ddb) else 'PITR on'})"
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": pk, "AttributeType": pkt}, {"AttributeName": sk, "AttributeType": skt}],
        KeySchema=[{"AttributeName": pk, "KeyType": "HASH"}, {"AttributeName": sk, "KeyType": "RANGE"}],
    )
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1 if _is_local(ddb) else 5})
    return f"table {name}: created (on demand, {_ensure_pitr(ddb, name, dry_run)})"


_PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
}
_ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def _bucket_settings(s3, name: str, dry_run: bool) -> list[str]:
    """Versioning, default encryption and the public access block; returns what it changed."""
    changes: list[str] = []
    if s3.get_bucket_versioning(Bucket=name).get("Status") != "Enabled":
        changes.append("versioning")
        if not dry_run:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    try:
        rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError as exc:
        if _code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        rules = []
    if not rules:
        changes.append("encryption")
        if not dry_run:
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=_ENCRYPTION)
    try:
        block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if _code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise
        block = {}
    if any(not block.get(k) for k in _PUBLIC_ACCESS_BLOCK):
        changes.append("public access block")
        if not dry_run:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCK)
    return changes


def _ensure_bucket(s3, name: str, region: str, dry_run: bool) -> str:
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            if _code(exc) in ("403", "AccessDenied"):
                raise ProvisionError(
                    f"bucket {name} exists but belongs to another account (S3 names are global): "
                    "set BACKUP_BUCKET to another name in the stage") from exc
            raise
    else:
        changes = _bucket_settings(s3, name, dry_run)
        if not changes:
            return f"bucket {name}: exists (versioned, encrypted, public access blocked)"
        return f"bucket {name}: exists, {'would turn on' if dry_run else 'turned on'} {', '.join(changes)}"
    if dry_run:
        return f"bucket {name}: would create (versioned, encrypted, public access blocked)"
    kwargs = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=name, **kwargs)
    _bucket_settings(s3, name, dry_run=False)
    return f"bucket {name}: created (versioned, encrypted, public access blocked)"


def provision(settings: Settings | None = None, *, dry_run: bool = False, session: boto3.Session | None = None,
              progress=None) -> list[str]:
    """Creates whatever is missing; returns one line per resource saying what happened.

    `progress`, when given, is called with each line as soon as that resource is done.
    """
    settings = settings or Settings.from_env()
    session = session or boto3.Session(region_name=settings.aws_region)
    plan = plan_for(settings)
    kinesis = session.client("kinesis")
    ddb = session.client("dynamodb")
    s3 = session.client("s3")
    steps = [lambda n=n, c=c: _ensure_stream(kinesis, n, c, dry_run) for n, c in plan.streams.items()]
    steps += [lambda n=n, k=k: _ensure_table(ddb, n, k, dry_run) for n, k in plan.tables.items()]
    steps.append(lambda: _ensure_bucket(s3, plan.bucket, settings.aws_region, dry_run))
    lines = []
    for step in steps:
        line = step()
        log.info("provision dry_run=%s %s", dry_run, line)
        if progress is not None:
            progress(line)
        lines.append(line)
    return lines


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.provision", description=__doc__.split("\n\n")[0],
        epilog="Endpoints, credentials and region come from the usual AWS variables "
               "(AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_KINESIS/_DYNAMODB/_S3).")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--stage", default=None,
                        help="take resource names from this stage of the Chalice config (local, dev, prod); "
                             "without it they come from the environment (SPEC §8 defaults)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="Chalice config file (default: %(default)s)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    setup_logging(logging.WARNING)
    start = time.monotonic()
    try:
        settings = settings_for_stage(args.stage, args.config) if args.stage else Settings.from_env()
        where = f"stage {args.stage}" if args.stage else "environment"
        print(f"provisioning ({where}, region {settings.aws_region}){' — dry run, nothing changes' if args.dry_run else ''}",
              flush=True)
        provision(settings, dry_run=args.dry_run, progress=lambda line: print(f"  {line}", flush=True))
        if args.stage and (left := stage_placeholders(args.stage, args.config)):
            print(f"warning: stage {args.stage} still has placeholder values in {args.config}: "
                  f"{', '.join(left)} (docs/deploy.md says where each comes from)", flush=True)
    except ProvisionError as exc:
        print(f"provision: error: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"provision: AWS refused: {exc}", file=sys.stderr)
        return 1
    print(f"done in {time.monotonic() - start:.1f}s{' (dry run)' if args.dry_run else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
