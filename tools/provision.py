"""Creates, idempotently, the AWS resources Supernoba needs (SPEC §7, §8).

Kinesis streams (orders 4 shards, fills 2, order-status 2), the DynamoDB tables
`trade_history` and `candle_history` (on demand), and the S3 backup bucket — against
whatever endpoints boto3 is configured for (the local emulators through
`AWS_ENDPOINT_URL_*`, or AWS itself). `--dry-run` prints the plan and changes nothing.

    python -m tools.provision [--dry-run] [--stage NAME]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

import boto3
from botocore.exceptions import ClientError

from chalice_app.config import Settings

log = logging.getLogger("supernoba.provision")


@dataclass(frozen=True)
class Plan:
    streams: dict[str, int]
    tables: dict[str, tuple[tuple[str, str], tuple[str, str]]]  # name -> ((pk, type), (sk, type))
    bucket: str


def plan_for(settings: Settings) -> Plan:
    return Plan(
        streams={settings.orders_stream: 4, settings.fills_stream: 2, settings.status_stream: 2},
        tables={
            settings.trade_table: (("pk", "S"), ("sk", "S")),
            settings.candle_table: (("pk", "S"), ("sk", "N")),
        },
        bucket=settings.backup_bucket,
    )


def _ensure_stream(kinesis, name: str, shards: int, dry_run: bool) -> str:
    try:
        desc = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        return f"stream {name}: exists ({desc['OpenShardCount']} shards)"
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    if dry_run:
        return f"stream {name}: would create with {shards} shards"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2 if _is_local(kinesis) else 5})
    return f"stream {name}: created with {shards} shards"


def _is_local(client) -> bool:
    return "amazonaws.com" not in client.meta.endpoint_url


def _ensure_table(ddb, name: str, keys: tuple[tuple[str, str], tuple[str, str]], dry_run: bool) -> str:
    try:
        ddb.describe_table(TableName=name)
        return f"table {name}: exists"
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    if dry_run:
        return f"table {name}: would create (on demand)"
    (pk, pkt), (sk, skt) = keys
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": pk, "AttributeType": pkt}, {"AttributeName": sk, "AttributeType": skt}],
        KeySchema=[{"AttributeName": pk, "KeyType": "HASH"}, {"AttributeName": sk, "KeyType": "RANGE"}],
    )
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1 if _is_local(ddb) else 5})
    if not _is_local(ddb):
        ddb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    return f"table {name}: created (on demand)"


def _ensure_bucket(s3, name: str, region: str, dry_run: bool) -> str:
    try:
        s3.head_bucket(Bucket=name)
        return f"bucket {name}: exists"
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
    if dry_run:
        return f"bucket {name}: would create (versioned, encrypted, public access blocked)"
    kwargs = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=name, **kwargs)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    )
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
        },
    )
    return f"bucket {name}: created"


def provision(settings: Settings | None = None, *, dry_run: bool = False, session: boto3.Session | None = None) -> list[str]:
    """Creates whatever is missing; returns one line per resource saying what happened."""
    settings = settings or Settings.from_env()
    session = session or boto3.Session(region_name=settings.aws_region)
    plan = plan_for(settings)
    kinesis = session.client("kinesis")
    ddb = session.client("dynamodb")
    s3 = session.client("s3")
    lines = [_ensure_stream(kinesis, n, c, dry_run) for n, c in plan.streams.items()]
    lines += [_ensure_table(ddb, n, k, dry_run) for n, k in plan.tables.items()]
    lines.append(_ensure_bucket(s3, plan.bucket, settings.aws_region, dry_run))
    for line in lines:
        log.info("provision %s", line)
    return lines


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.provision", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--stage", default=None, help="stage name (informational; the environment names the resources)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    start = time.monotonic()
    for line in provision(dry_run=args.dry_run):
        print(line)
    print(f"done in {time.monotonic() - start:.1f}s{' (dry run)' if args.dry_run else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
