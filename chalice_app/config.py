"""Configuration of every Supernoba process, read once from the environment (SPEC §8).

One frozen `Settings` object is the single source of truth for stream, table and bucket
names, cache URLs, ports and auth switches. AWS endpoints are *not* configured here:
boto3 reads its standard `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL_DYNAMODB` /
`AWS_ENDPOINT_URL_S3` variables by itself, so clients are simply built with
`boto3.client("kinesis", region_name=settings.aws_region)`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger("supernoba.config")

TRUE_WORDS = {"1", "true", "yes", "on"}
#: TCP ports (ENGINE_HTTP_PORT, STREAMER_HTTP_PORT, VALKEY_PORT); 0 = any free port
PORT_RANGE = (0, 65535)

_Num = TypeVar("_Num", int, float)


class ENV:
    """Names of the environment variables (SPEC §8): the one place that spells them. Code that
    reads or writes one (Settings.from_env, tools/dev.py, the benches) uses these constants."""

    # AWS (boto3 reads the endpoints and credentials itself; SPEC §8)
    AWS_REGION = "AWS_REGION"
    AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
    AWS_ENDPOINT_URL_KINESIS = "AWS_ENDPOINT_URL_KINESIS"
    AWS_ENDPOINT_URL_DYNAMODB = "AWS_ENDPOINT_URL_DYNAMODB"
    AWS_ENDPOINT_URL_S3 = "AWS_ENDPOINT_URL_S3"
    AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
    AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
    # streams, tables, bucket
    KINESIS_ORDERS_STREAM = "KINESIS_ORDERS_STREAM"
    KINESIS_FILLS_STREAM = "KINESIS_FILLS_STREAM"
    KINESIS_STATUS_STREAM = "KINESIS_STATUS_STREAM"
    DYNAMODB_TABLE = "DYNAMODB_TABLE"
    CANDLE_TABLE = "CANDLE_TABLE"
    BACKUP_BUCKET = "BACKUP_BUCKET"
    # caches
    DEPTH_CACHE_URL = "DEPTH_CACHE_URL"
    DEPTH_CACHE_HOST = "DEPTH_CACHE_HOST"
    VALKEY_HOST = "VALKEY_HOST"
    VALKEY_PORT = "VALKEY_PORT"
    BACKUP_CACHE_URL = "BACKUP_CACHE_URL"
    REDIS_HOST = "REDIS_HOST"
    CACHE_CLUSTER_MODE = "CACHE_CLUSTER_MODE"
    # process, auth, stage
    LOG_LEVEL = "LOG_LEVEL"
    WEBSOCKET_ENDPOINT = "WEBSOCKET_ENDPOINT"
    DEBUG_MODE = "DEBUG_MODE"
    SUPABASE_URL = "SUPABASE_URL"
    SUPABASE_JWT_SECRET = "SUPABASE_JWT_SECRET"
    ALLOW_TEST_MODE = "ALLOW_TEST_MODE"
    ADMIN_API_KEY = "ADMIN_API_KEY"
    MARKET_TZ = "MARKET_TZ"
    SUPERNOBA_STAGE = "SUPERNOBA_STAGE"
    SUPERNOBA_DATA_DIR = "SUPERNOBA_DATA_DIR"
    # engine service
    ENGINE_GET_LIMIT = "ENGINE_GET_LIMIT"
    ENGINE_GET_TIMEOUT_MS = "ENGINE_GET_TIMEOUT_MS"
    ENGINE_HTTP_HOST = "ENGINE_HTTP_HOST"
    ENGINE_HTTP_PORT = "ENGINE_HTTP_PORT"
    ENGINE_ID = "ENGINE_ID"
    ENGINE_LEASE_TTL_MS = "ENGINE_LEASE_TTL_MS"
    ENGINE_PARSE_THREAD = "ENGINE_PARSE_THREAD"
    ENGINE_POLL_FLOOR_MS = "ENGINE_POLL_FLOOR_MS"
    ENGINE_POLL_HOT_MS = "ENGINE_POLL_HOT_MS"
    ENGINE_POLL_IDLE_MAX_MS = "ENGINE_POLL_IDLE_MAX_MS"
    ENGINE_SNAPSHOT_RECORDS = "ENGINE_SNAPSHOT_RECORDS"
    ENGINE_SNAPSHOT_SECONDS = "ENGINE_SNAPSHOT_SECONDS"
    # streamer
    STREAMER_ANON_MS = "STREAMER_ANON_MS"
    STREAMER_CONCURRENCY = "STREAMER_CONCURRENCY"
    STREAMER_HTTP_HOST = "STREAMER_HTTP_HOST"
    STREAMER_HTTP_PORT = "STREAMER_HTTP_PORT"
    STREAMER_MEMBERSHIP_MS = "STREAMER_MEMBERSHIP_MS"
    STREAMER_REALTIME_MS = "STREAMER_REALTIME_MS"
    STREAMER_RETRIES = "STREAMER_RETRIES"
    STREAMER_SEND_TIMEOUT = "STREAMER_SEND_TIMEOUT"
    STREAMER_SLOW_CONCURRENCY = "STREAMER_SLOW_CONCURRENCY"
    STREAMER_TRANSPORT = "STREAMER_TRANSPORT"
    # tools (python -m tools.load): the stack to drive
    SUPERNOBA_REST_URL = "SUPERNOBA_REST_URL"
    SUPERNOBA_WS_URL = "SUPERNOBA_WS_URL"
    # Kinesis triggers of the Chalice app
    FILLS_TRIGGER_BATCH_SIZE = "FILLS_TRIGGER_BATCH_SIZE"
    FILLS_TRIGGER_STARTING_POSITION = "FILLS_TRIGGER_STARTING_POSITION"
    STATUS_TRIGGER_BATCH_SIZE = "STATUS_TRIGGER_BATCH_SIZE"
    STATUS_TRIGGER_STARTING_POSITION = "STATUS_TRIGGER_STARTING_POSITION"


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in TRUE_WORDS


def _ws_endpoint(env: Mapping[str, str]) -> str:
    """WEBSOCKET_ENDPOINT is the @connections management API's base, an http(s) URL; the
    wss:// (ws://) URL `chalice deploy` prints for the WebSocket API names the same host and
    stage, so it is taken as https:// (http://) rather than failing at the first send.  A
    trailing slash (as printed) is dropped."""
    raw = env.get(ENV.WEBSOCKET_ENDPOINT, "").strip().rstrip("/")
    for scheme, http in (("wss://", "https://"), ("ws://", "http://")):
        if raw.lower().startswith(scheme):
            return http + raw[len(scheme):]
    return raw


def _admin_api_key(env: Mapping[str, str], stage: str) -> str:
    """SPEC §5/§8: the static admin key works on the `local` stage only; a deployed stage needs
    an admin JWT, whatever its environment holds."""
    key = env.get(ENV.ADMIN_API_KEY, "")
    if key and stage != "local":
        log.warning("event=admin_api_key_ignored stage=%s reason=local_stage_only", stage)
        return ""
    return key


def _number(env: Mapping[str, str], name: str, default: _Num, kind: type[_Num],
            bounds: tuple[int, int] | None = None) -> _Num:
    """The one reader of a numeric variable: `default` when unset; otherwise a finite `kind`
    (an int setting takes a whole number only) within `bounds`, else a ValueError that names
    the variable and its value (the engine and the streamer exit with code 2 on it)."""
    raw = env.get(name)
    if not raw:
        return default
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError:
        value = None
    # an int is checked against 64 bits, not isfinite(): a 400-digit one overflows a float
    if value is None or (abs(value) >= 2**63 if kind is int else not math.isfinite(value)):
        raise ValueError(f"{name} must be {what}, got {raw!r}")
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{name} must be {what} from {bounds[0]} to {bounds[1]}, got {raw!r}")
    return value


def _cache_url(env: Mapping[str, str], url_var: str, host_vars: tuple[str, ...], port_var: str | None,
               unset: str | None = None) -> str:
    """`*_URL` wins; otherwise `redis://HOST:PORT/0` from the first host variable that is set
    (a `HOST:PORT` value gives its own port); with none of them, `unset` when given, else
    `redis://127.0.0.1:PORT/0`."""
    url = env.get(url_var)
    if url:
        return url
    if unset is not None and not any(env.get(v) for v in host_vars):
        return unset
    name, host = next(((v, env[v].strip()) for v in host_vars if env.get(v)), ("", "127.0.0.1"))
    port = _number(env, port_var, 6379, int, PORT_RANGE) if port_var else 6379
    head, sep, tail = host.partition(":")
    if sep and head and tail.isdigit():  # `HOST:PORT`, as the ElastiCache console shows an endpoint
        if not PORT_RANGE[0] <= int(tail) <= PORT_RANGE[1]:
            raise ValueError(f"{name} has port {tail}, not from {PORT_RANGE[0]} to {PORT_RANGE[1]}")
        host, port = head, int(tail)
    return f"redis://{host}:{port}/0"


#: CACHE_CLUSTER_MODE values (chalice_app.cache): `auto` asks each cache once (`INFO cluster`).
CACHE_CLUSTER_MODES = ("auto", "on", "off")
_CLUSTER_MODE_WORDS = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}


def _cluster_mode(env: Mapping[str, str]) -> str:
    raw = (env.get(ENV.CACHE_CLUSTER_MODE) or "auto").strip().lower()
    mode = _CLUSTER_MODE_WORDS.get(raw, raw)
    if mode not in CACHE_CLUSTER_MODES:
        raise ValueError(f"CACHE_CLUSTER_MODE must be one of {'|'.join(CACHE_CLUSTER_MODES)}, not {raw!r}")
    return mode


#: ENGINE_PARSE_THREAD words: `auto` (unset) lets the engine decide by the CPUs it may use.
_PARSE_THREAD_WORDS = {"auto": None, "1": True, "true": True, "yes": True, "on": True,
                       "0": False, "false": False, "no": False, "off": False}


def _parse_thread(env: Mapping[str, str]) -> bool | None:
    raw = (env.get(ENV.ENGINE_PARSE_THREAD) or "auto").strip().lower()
    if raw not in _PARSE_THREAD_WORDS:
        raise ValueError(f"ENGINE_PARSE_THREAD must be auto, on or off, not {raw!r}")
    return _PARSE_THREAD_WORDS[raw]


#: Engine defaults next to an emulator (AWS_ENDPOINT_URL_KINESIS set); the AWS defaults are the
#: `Settings` field defaults below.
EMULATED_ENGINE_DEFAULTS: Mapping[str, object] = {
    "engine_poll_floor_ms": 10,
    "engine_poll_idle_max_ms": 100,
    "engine_get_limit": 1000,
    "engine_http_host": "127.0.0.1",
}


def _engine_settings(env: Mapping[str, str]) -> dict:
    """ENGINE_* variables of the engine service (issue 4)."""
    emulated = bool(env.get(ENV.AWS_ENDPOINT_URL_KINESIS))

    def default(name: str) -> object:
        # Settings is defined below; its field defaults are the one source of the AWS defaults
        return EMULATED_ENGINE_DEFAULTS[name] if emulated and name in EMULATED_ENGINE_DEFAULTS else getattr(Settings, name)

    def whole(var: str, name: str) -> int:
        return _number(env, var, int(default(name)), int)

    floor = whole(ENV.ENGINE_POLL_FLOOR_MS, "engine_poll_floor_ms")
    return {
        "engine_poll_floor_ms": floor,
        "engine_poll_idle_max_ms": max(floor, whole(ENV.ENGINE_POLL_IDLE_MAX_MS, "engine_poll_idle_max_ms")),
        # a shard that had records in the last ENGINE_POLL_HOT_MS backs off only to 2 x floor
        "engine_poll_hot_ms": whole(ENV.ENGINE_POLL_HOT_MS, "engine_poll_hot_ms"),
        # emulated: kinesalite needs ~60 µs per record of a GetRecords response (seconds for 10,000
        # on a loaded machine), so smaller pages; AWS: the API maximum (5 calls/s per shard)
        "engine_get_limit": whole(ENV.ENGINE_GET_LIMIT, "engine_get_limit"),
        "engine_get_timeout_ms": whole(ENV.ENGINE_GET_TIMEOUT_MS, "engine_get_timeout_ms"),
        "engine_snapshot_records": whole(ENV.ENGINE_SNAPSHOT_RECORDS, "engine_snapshot_records"),
        "engine_snapshot_seconds": _number(env, ENV.ENGINE_SNAPSHOT_SECONDS,
                                           float(default("engine_snapshot_seconds")), float),
        "engine_lease_ttl_ms": whole(ENV.ENGINE_LEASE_TTL_MS, "engine_lease_ttl_ms"),
        "engine_id": env.get(ENV.ENGINE_ID, default("engine_id")),
        # None: a second thread parses big batches when the process may use two CPUs or more
        "engine_parse_thread": _parse_thread(env),
        # /health, /metrics, /book: loopback only next to an emulator (a laptop), else every interface
        "engine_http_host": env.get(ENV.ENGINE_HTTP_HOST) or default("engine_http_host"),
    }


def _streamer_settings(env: Mapping[str, str]) -> dict:
    """STREAMER_* variables of the streamer (issue 6; docs/streamer.md). Defaults: the `Settings`
    field defaults below."""
    d = Settings
    return {
        "streamer_realtime_ms": _number(env, ENV.STREAMER_REALTIME_MS, d.streamer_realtime_ms, float),
        "streamer_anon_ms": _number(env, ENV.STREAMER_ANON_MS, d.streamer_anon_ms, float),
        # fan-out workers = requests in flight; 0 = the transport's default (streamer_pkg.transport)
        "streamer_concurrency": _number(env, ENV.STREAMER_CONCURRENCY, d.streamer_concurrency, int),
        "streamer_slow_concurrency": _number(env, ENV.STREAMER_SLOW_CONCURRENCY, d.streamer_slow_concurrency, int),
        "streamer_send_timeout_s": _number(env, ENV.STREAMER_SEND_TIMEOUT, d.streamer_send_timeout_s, float),
        "streamer_retries": _number(env, ENV.STREAMER_RETRIES, d.streamer_retries, int),
        "streamer_transport": env.get(ENV.STREAMER_TRANSPORT) or d.streamer_transport,
        "streamer_membership_ms": _number(env, ENV.STREAMER_MEMBERSHIP_MS, d.streamer_membership_ms, float),
        # /health and /metrics: every interface on EC2 (health checks, scraping), loopback next to
        # the emulators (the local stack listens on loopback only, SPEC §11) — as the engine's
        "streamer_http_host": env.get(ENV.STREAMER_HTTP_HOST) or (
            EMULATED_ENGINE_DEFAULTS["engine_http_host"] if env.get(ENV.AWS_ENDPOINT_URL_KINESIS)
            else d.streamer_http_host),
    }


def _trigger_settings(env: Mapping[str, str]) -> dict:
    """Kinesis trigger settings of the Chalice app (issue 9). app.py reads them at import time,
    which `chalice package/deploy` does with the stage's environment variables, so each stage
    of .chalice/config.json sets them (TRIM_HORIZON for fills: a new deploy persists every
    retained trade, idempotently; LATEST for order status: old notifications are noise)."""
    d = Settings
    return {
        "fills_trigger_batch_size": _number(env, ENV.FILLS_TRIGGER_BATCH_SIZE, d.fills_trigger_batch_size, int),
        "fills_trigger_starting_position": (env.get(ENV.FILLS_TRIGGER_STARTING_POSITION)
                                            or d.fills_trigger_starting_position),
        "status_trigger_batch_size": _number(env, ENV.STATUS_TRIGGER_BATCH_SIZE, d.status_trigger_batch_size, int),
        "status_trigger_starting_position": (env.get(ENV.STATUS_TRIGGER_STARTING_POSITION)
                                             or d.status_trigger_starting_position),
    }


@dataclass(frozen=True)
class Settings:
    """Every setting of SPEC §8, with its documented default."""

    orders_stream: str = "supernoba-orders"
    fills_stream: str = "supernoba-fills"
    status_stream: str = "supernoba-order-status"
    trade_table: str = "trade_history"
    candle_table: str = "candle_history"
    backup_bucket: str = "supernoba-backup"
    aws_region: str = "ap-northeast-2"
    log_level: str = "INFO"
    depth_cache_url: str = "redis://127.0.0.1:6379/0"
    backup_cache_url: str = "redis://127.0.0.1:6379/0"
    # CACHE_CLUSTER_MODE (issue 9): auto | on | off — cluster-mode Valkey/ElastiCache clients for
    # both caches (chalice_app.cache); `auto` probes each cache once with INFO cluster.
    cache_cluster_mode: str = "auto"
    websocket_endpoint: str = ""
    debug_mode: bool = False
    engine_http_port: int = 9100
    streamer_http_port: int = 9101
    streamer_http_host: str = "0.0.0.0"
    supabase_url: str = ""
    supabase_jwt_secret: str = ""
    allow_test_mode: bool = False
    admin_api_key: str = ""
    market_tz: str = "UTC"
    stage: str = "local"
    # Engine service (issue 4; docs/engine_service.md). The poll floor defaults to 10 ms when
    # AWS_ENDPOINT_URL_KINESIS points at an emulator, else 200 ms (5 GetRecords/s per shard).
    engine_poll_floor_ms: int = 200
    engine_poll_idle_max_ms: int = 1000
    engine_poll_hot_ms: int = 5000
    engine_get_limit: int = 10000
    engine_get_timeout_ms: int = 10000  # GetRecords read timeout; on expiry the Limit is halved
    engine_snapshot_records: int = 10000
    engine_snapshot_seconds: float = 30.0
    engine_lease_ttl_ms: int = 10000
    engine_id: str = ""
    engine_parse_thread: bool | None = None
    engine_http_host: str = "0.0.0.0"
    # Kinesis triggers of the Chalice app (issue 9; FILLS_/STATUS_TRIGGER_BATCH_SIZE and
    # FILLS_/STATUS_TRIGGER_STARTING_POSITION, set per stage in .chalice/config.json).
    fills_trigger_batch_size: int = 100
    fills_trigger_starting_position: str = "TRIM_HORIZON"
    status_trigger_batch_size: int = 100
    status_trigger_starting_position: str = "LATEST"
    # Streamer (issue 6; docs/streamer.md): tiers, fan-out and the PostToConnection transport
    # (fast | chalice-lean | chalice | aiohttp).
    streamer_realtime_ms: float = 50
    streamer_anon_ms: float = 500
    streamer_concurrency: int = 0
    streamer_slow_concurrency: int = 8
    streamer_send_timeout_s: float = 2.0
    streamer_retries: int = 3
    streamer_transport: str = "fast"
    streamer_membership_ms: float = 1000
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        # a variable set to an empty (or blank) value counts as unset: `ENGINE_HTTP_PORT=` in an
        # env file must give the default, not a crash at import of every Lambda handler
        env = {k: v for k, v in (os.environ if env is None else env).items() if v.strip()}
        depth_cache_url = _cache_url(env, ENV.DEPTH_CACHE_URL, (ENV.DEPTH_CACHE_HOST, ENV.VALKEY_HOST), ENV.VALKEY_PORT)
        return cls(
            orders_stream=env.get(ENV.KINESIS_ORDERS_STREAM, cls.orders_stream),
            fills_stream=env.get(ENV.KINESIS_FILLS_STREAM, cls.fills_stream),
            status_stream=env.get(ENV.KINESIS_STATUS_STREAM, cls.status_stream),
            trade_table=env.get(ENV.DYNAMODB_TABLE, cls.trade_table),
            candle_table=env.get(ENV.CANDLE_TABLE, cls.candle_table),
            backup_bucket=env.get(ENV.BACKUP_BUCKET, cls.backup_bucket),
            aws_region=env.get(ENV.AWS_REGION) or env.get(ENV.AWS_DEFAULT_REGION) or cls.aws_region,
            log_level=env.get(ENV.LOG_LEVEL, cls.log_level).upper(),
            depth_cache_url=depth_cache_url,
            # neither BACKUP_CACHE_URL nor REDIS_HOST: the backup cache shares the depth cache's
            # server (no key in common), not a Valkey that may not exist on 127.0.0.1:6379
            backup_cache_url=_cache_url(env, ENV.BACKUP_CACHE_URL, (ENV.REDIS_HOST,), None, unset=depth_cache_url),
            cache_cluster_mode=_cluster_mode(env),
            websocket_endpoint=_ws_endpoint(env),
            debug_mode=_flag(env, ENV.DEBUG_MODE),
            engine_http_port=_number(env, ENV.ENGINE_HTTP_PORT, cls.engine_http_port, int, PORT_RANGE),
            streamer_http_port=_number(env, ENV.STREAMER_HTTP_PORT, cls.streamer_http_port, int, PORT_RANGE),
            supabase_url=env.get(ENV.SUPABASE_URL, "").rstrip("/"),
            supabase_jwt_secret=env.get(ENV.SUPABASE_JWT_SECRET, ""),
            allow_test_mode=_flag(env, ENV.ALLOW_TEST_MODE),
            admin_api_key=_admin_api_key(env, env.get(ENV.SUPERNOBA_STAGE, cls.stage)),
            market_tz=env.get(ENV.MARKET_TZ, cls.market_tz),
            stage=env.get(ENV.SUPERNOBA_STAGE, cls.stage),
            **_engine_settings(env),
            **_trigger_settings(env),
            **_streamer_settings(env),
            extra=dict(env),
        )

    @property
    def jwks_url(self) -> str:
        return f"{self.supabase_url}/auth/v1/.well-known/jwks.json" if self.supabase_url else ""

    @property
    def jwt_issuer(self) -> str:
        return f"{self.supabase_url}/auth/v1" if self.supabase_url else ""
