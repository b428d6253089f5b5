"""`chalice package --stage dev|prod` builds the SAM template we would deploy (issue 9).

Offline, the template is the deployment: these tests read it as AWS would — the REST API
and its routes, the WebSocket API with its three routes, both Kinesis event sources on the
stage's streams, both schedules, VPC settings, environment variables, per-function memory
and timeouts, the least-privilege roles — and run cfn-lint on it. The zip's import check
lives in tests/test_packaging.py; here app.py is imported with prod's environment.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = json.loads((REPO / ".chalice" / "config.json").read_text())
STAGES = ("dev", "prod")
BIN = Path(sys.executable).parent
# Environment variables Lambda refuses to have set (reserved by the runtime).
LAMBDA_RESERVED = {
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_EXECUTION_ENV", "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR", "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_XRAY_CONTEXT_MISSING",
}
REST_ROUTES = {  # SPEC §5
    "/orders": {"post"},
    "/orders/{order_id}": {"delete", "patch"},
    "/chart": {"get"},
    "/depth/{symbol}": {"get"},
    "/admin/symbols": {"get", "post", "delete"},
    "/health": {"get"},
}


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    """Both stages packaged, one after the other: the first run fills Chalice's dependency
    cache (.chalice/deployments/), which the second then reuses (~10 s instead of a download)."""
    root = tmp_path_factory.mktemp("chalice-package")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "AWS_DEFAULT_REGION": "ap-northeast-2"}
    for stage in STAGES:
        proc = subprocess.run(
            [str(BIN / "chalice"), "package", "--stage", stage, str(root / stage)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
        )
        assert proc.returncode == 0, f"chalice package --stage {stage} failed:\n{proc.stdout}"
    return {stage: root / stage for stage in STAGES}


def _template(packages, stage) -> dict:
    return json.loads((packages[stage] / "sam.json").read_text())


def _of_type(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _functions(template: dict) -> dict[str, dict]:
    return _of_type(template, "AWS::Serverless::Function")


def _events(template: dict, kind: str) -> list[tuple[str, dict]]:
    return [(name, ev["Properties"]) for name, fn in _functions(template).items()
            for ev in fn["Properties"].get("Events", {}).values() if ev["Type"] == kind]


def _stage(stage: str) -> dict:
    return CONFIG["stages"][stage]


def _camel(name: str) -> str:
    """Chalice's logical id of a Lambda function (`on_fills` -> `OnFills`, REST -> `APIHandler`)."""
    return "APIHandler" if name == "api_handler" else "".join(p[:1].upper() + p[1:] for p in name.split("_"))


@pytest.mark.parametrize("stage", STAGES)
def test_rest_api_has_every_spec_route_on_the_stage(packages, stage):
    apis = _of_type(_template(packages, stage), "AWS::Serverless::Api")
    assert len(apis) == 1
    (api,) = apis.values()
    assert api["Properties"]["StageName"] == _stage(stage)["api_gateway_stage"]
    assert api["Properties"]["EndpointConfiguration"] == "REGIONAL"
    paths = api["Properties"]["DefinitionBody"]["paths"]
    for route, methods in REST_ROUTES.items():
        assert route in paths, f"{route} missing from the {stage} REST API (have {sorted(paths)})"
        assert methods <= set(paths[route]), f"{route}: {sorted(methods - set(paths[route]))} missing"


@pytest.mark.parametrize("stage", STAGES)
def test_websocket_api_with_its_three_routes(packages, stage):
    template = _template(packages, stage)
    (api,) = _of_type(template, "AWS::ApiGatewayV2::Api").values()
    assert api["Properties"]["ProtocolType"] == "WEBSOCKET"
    routes = {r["Properties"]["RouteKey"]: r for r in _of_type(template, "AWS::ApiGatewayV2::Route").values()}
    assert set(routes) == {"$connect", "$default", "$disconnect"}
    integrations = _of_type(template, "AWS::ApiGatewayV2::Integration")
    functions = _functions(template)
    for key, route in routes.items():
        integration = integrations[route["Properties"]["Target"]["Fn::Join"][1][1]["Ref"]]
        handler = integration["Properties"]["IntegrationUri"]["Fn::Sub"][1]["WebsocketHandler"]["Ref"]
        assert handler in functions, f"{key} is not wired to a function"
    (ws_stage,) = _of_type(template, "AWS::ApiGatewayV2::Stage").values()
    assert ws_stage["Properties"]["StageName"] == _stage(stage)["api_gateway_stage"]


@pytest.mark.parametrize("stage", STAGES)
def test_kinesis_triggers_read_the_stages_fills_and_status_streams(packages, stage):
    env = _stage(stage)["environment_variables"]
    sources = _events(_template(packages, stage), "Kinesis")
    streams = {}
    for _fn, props in sources:
        arn = props["Stream"]["Fn::Sub"]
        streams[arn.rsplit("stream/", 1)[1]] = props
    assert set(streams) == {env["KINESIS_FILLS_STREAM"], env["KINESIS_STATUS_STREAM"]}, (
        "the triggers must take their stream names from the stage's environment")
    fills, status = streams[env["KINESIS_FILLS_STREAM"]], streams[env["KINESIS_STATUS_STREAM"]]
    assert fills["BatchSize"] == int(env["FILLS_TRIGGER_BATCH_SIZE"])
    assert fills["StartingPosition"] == env["FILLS_TRIGGER_STARTING_POSITION"]
    assert status["BatchSize"] == int(env["STATUS_TRIGGER_BATCH_SIZE"])
    assert status["StartingPosition"] == env["STATUS_TRIGGER_STARTING_POSITION"]


@pytest.mark.parametrize("stage", STAGES)
def test_two_schedules(packages, stage):
    schedules = sorted(props["Schedule"] for _fn, props in _events(_template(packages, stage), "Schedule"))
    assert len(schedules) == 2
    for expr in schedules:
        assert re.fullmatch(r"(rate\(\d+ (minute|minutes|hour|hours)\)|cron\(.+\))", expr), expr


@pytest.mark.parametrize("stage", STAGES)
def test_every_function_is_in_the_stages_vpc_with_its_environment(packages, stage):
    cfg = _stage(stage)
    functions = _functions(_template(packages, stage))
    assert len(functions) >= 8  # REST, 3 WebSocket, 2 Kinesis, 2 schedules
    for name, fn in functions.items():
        props = fn["Properties"]
        assert props["VpcConfig"] == {"SubnetIds": cfg["subnet_ids"], "SecurityGroupIds": cfg["security_group_ids"]}, name
        env = props["Environment"]["Variables"]
        for key, value in cfg["environment_variables"].items():
            assert env.get(key) == value, f"{name}: {key}"
        assert env["ALLOW_TEST_MODE"] == "false", name
        assert "ADMIN_API_KEY" not in env, name
        assert not (set(env) & LAMBDA_RESERVED), f"{name} sets Lambda-reserved variables {set(env) & LAMBDA_RESERVED}"
        assert props["Runtime"].startswith("python3.")


@pytest.mark.parametrize("stage", STAGES)
def test_per_function_memory_and_timeout_reach_real_functions(packages, stage):
    """A name in `lambda_functions` that matches no function is silently ignored by Chalice."""
    functions = _functions(_template(packages, stage))
    per_function = _stage(stage)["lambda_functions"]
    for name, conf in per_function.items():
        logical = _camel(name)
        assert logical in functions, f"lambda_functions.{name} matches no function (have {sorted(functions)})"
        assert functions[logical]["Properties"]["MemorySize"] == conf["lambda_memory_size"]
        assert functions[logical]["Properties"]["Timeout"] == conf["lambda_timeout"]
    for logical, fn in functions.items():
        assert fn["Properties"]["Timeout"] <= 900, logical
    # API Gateway gives up after 29 s: the REST and WebSocket handlers must finish before that
    for logical in ("APIHandler", "WebsocketConnect", "WebsocketMessage", "WebsocketDisconnect"):
        assert functions[logical]["Properties"]["Timeout"] < 29, logical


@pytest.mark.parametrize("stage", STAGES)
def test_roles_carry_the_least_privilege_policy_file(packages, stage):
    cfg = _stage(stage)
    assert cfg["autogen_policy"] is False
    policy = json.loads((REPO / ".chalice" / cfg["iam_policy_file"]).read_text())
    template = _template(packages, stage)
    roles = _of_type(template, "AWS::IAM::Role")
    for name, fn in _functions(template).items():
        role = roles[fn["Properties"]["Role"]["Fn::GetAtt"][0]]
        docs = [p["PolicyDocument"] for p in role["Properties"]["Policies"]]
        assert docs == [policy], f"{name} does not run with {cfg['iam_policy_file']}"


def test_cfn_lint_accepts_both_templates(packages):
    lint = shutil.which("cfn-lint", path=str(BIN))
    assert lint, "cfn-lint (installed with moto[server]) is missing from the venv"
    proc = subprocess.run([lint, *(str(packages[stage] / "sam.json") for stage in STAGES)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_app_imports_with_the_prod_environment():
    """Module-level code of app.py (trigger names, settings, clients) must import with prod's
    variables and no reachable service. (tests/test_packaging.py imports the built zip.)"""
    site = ":".join(p for p in sys.path if "site-packages" in p)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{site}", "AWS_REGION": "ap-northeast-2",
           "AWS_DEFAULT_REGION": "ap-northeast-2", **_stage("prod")["environment_variables"]}
    probe = subprocess.run(
        [sys.executable, "-c", "import app; print(app.app.app_name, *sorted(getattr(e, 'stream', '') "
         "for e in app.app.event_sources if getattr(e, 'stream', '')))"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )
    assert probe.returncode == 0, probe.stderr
    env = _stage("prod")["environment_variables"]
    assert probe.stdout.split() == ["supernoba", *sorted([env["KINESIS_FILLS_STREAM"], env["KINESIS_STATUS_STREAM"]])]


def test_no_secret_or_local_only_setting_outside_local():
    for stage in STAGES:
        env = _stage(stage)["environment_variables"]
        assert env["ALLOW_TEST_MODE"] == "false"
        assert "ADMIN_API_KEY" not in env
        assert env["DEBUG_MODE"] == "false"
        assert not any(k.startswith("AWS_ENDPOINT_URL") for k in env), "emulator endpoints in a deployed stage"
    local = _stage("local")["environment_variables"]
    assert local["ALLOW_TEST_MODE"] == "true" and local["ADMIN_API_KEY"]
    # The local stack loads the app with these variables *over* its own: names, caches and
    # endpoints must not be pinned here, or tests' fresh streams and dynamic ports are overridden.
    pinned = {"KINESIS_ORDERS_STREAM", "KINESIS_FILLS_STREAM", "KINESIS_STATUS_STREAM", "DEPTH_CACHE_URL",
              "BACKUP_CACHE_URL", "DEPTH_CACHE_HOST", "REDIS_HOST", "WEBSOCKET_ENDPOINT"}
    assert not (set(local) & pinned)


def test_stages_do_not_share_resources():
    names = ("KINESIS_ORDERS_STREAM", "KINESIS_FILLS_STREAM", "KINESIS_STATUS_STREAM", "DYNAMODB_TABLE",
             "CANDLE_TABLE", "BACKUP_BUCKET")
    dev, prod = (_stage(s)["environment_variables"] for s in STAGES)
    for key in names:
        assert dev[key] != prod[key], f"dev and prod share {key}={dev[key]}"


@pytest.mark.parametrize("stage", STAGES)
def test_lambda_policy_names_exactly_the_stages_resources(stage):
    env = _stage(stage)["environment_variables"]
    gw = _stage(stage)["api_gateway_stage"]
    policy = json.loads((REPO / ".chalice" / f"policy-{stage}.json").read_text())
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        for action in _list(st["Action"]):
            assert "*" not in action, f"wildcard action {action}"
        if st["Resource"] == "*":  # only ENI management, which has no resource-level permissions
            assert all(a.startswith("ec2:") and ("NetworkInterface" in a or "PrivateIp" in a) for a in _list(st["Action"]))
    assert _list(by_sid["OrdersStreamPut"]["Resource"]) == [_stream(env["KINESIS_ORDERS_STREAM"])]
    assert "kinesis:GetRecords" not in by_sid["OrdersStreamPut"]["Action"]
    assert sorted(_list(by_sid["EngineOutputStreamsRead"]["Resource"])) == sorted(
        [_stream(env["KINESIS_FILLS_STREAM"]), _stream(env["KINESIS_STATUS_STREAM"])])
    assert not any(a.startswith("kinesis:Put") for a in by_sid["EngineOutputStreamsRead"]["Action"])
    assert sorted(r.rsplit("/", 1)[1] for r in _list(by_sid["Tables"]["Resource"])) == sorted(
        [env["DYNAMODB_TABLE"], env["CANDLE_TABLE"]])
    assert {"dynamodb:DeleteTable", "dynamodb:Scan", "dynamodb:DeleteItem"}.isdisjoint(by_sid["Tables"]["Action"])
    assert by_sid["BackupBucketObjects"]["Resource"] == f"arn:aws:s3:::{env['BACKUP_BUCKET']}/candles/*"
    assert by_sid["WebSocketConnections"]["Action"] == ["execute-api:ManageConnections"]
    assert f"/{gw}/" in by_sid["WebSocketConnections"]["Resource"]
    # `chalice deploy` names the REST API handler `supernoba-<stage>`, with no suffix
    groups = sorted(r.split(":log-group:", 1)[1] for r in _list(by_sid["Logs"]["Resource"]))
    assert groups == [f"/aws/lambda/supernoba-{stage}", f"/aws/lambda/supernoba-{stage}-*",
                      f"/aws/lambda/supernoba-{stage}:*"]
    assert by_sid["KinesisFailureDestination"]["Resource"].endswith(f":supernoba-{stage}-kinesis-failures")


def test_ec2_roles_are_least_privilege_for_prod():
    env = _stage("prod")["environment_variables"]
    engine = json.loads((REPO / "deploy" / "iam" / "ec2-engine-policy.json").read_text())
    streamer = json.loads((REPO / "deploy" / "iam" / "ec2-streamer-policy.json").read_text())

    def allowed(policy: dict, action: str, resource: str) -> bool:
        return any(action in _list(st["Action"]) and any(_arn_match(p, resource) for p in _list(st["Resource"]))
                   for st in policy["Statement"] if st["Effect"] == "Allow")

    orders, fills, status = (_stream(env[k]) for k in ("KINESIS_ORDERS_STREAM", "KINESIS_FILLS_STREAM",
                                                       "KINESIS_STATUS_STREAM"))
    orders, fills, status = (s.replace(":*:", ":123456789012:") for s in (orders, fills, status))
    assert allowed(engine, "kinesis:GetRecords", orders) and allowed(engine, "kinesis:GetShardIterator", orders)
    assert allowed(engine, "kinesis:PutRecords", fills) and allowed(engine, "kinesis:PutRecords", status)
    assert not allowed(engine, "kinesis:PutRecords", orders), "the engine never writes orders"
    assert not allowed(engine, "kinesis:GetRecords", fills)
    assert not any("execute-api" in a for st in engine["Statement"] for a in _list(st["Action"]))
    conn = "arn:aws:execute-api:ap-northeast-2:123456789012:abc123/production/POST/@connections/xyz="
    assert allowed(streamer, "execute-api:ManageConnections", conn)
    assert not allowed(streamer, "execute-api:ManageConnections", conn.replace("/production/", "/api/"))
    assert not any(a.startswith(("kinesis:", "dynamodb:", "s3:")) for st in streamer["Statement"] for a in _list(st["Action"]))


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def _stream(name: str) -> str:
    return f"arn:aws:kinesis:ap-northeast-2:*:stream/{name}"


def _arn_match(pattern: str, arn: str) -> bool:
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), arn) is not None

