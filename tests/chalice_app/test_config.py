"""chalice_app.config: the one place every setting is read; engine defaults that depend on
whether Kinesis is an emulator (a laptop) or AWS."""

from __future__ import annotations

import pytest

from chalice_app.config import Settings

LOCAL = {"AWS_ENDPOINT_URL_KINESIS": "http://127.0.0.1:4567"}


def test_engine_http_binds_loopback_next_to_an_emulator_and_every_interface_on_aws():
    assert Settings.from_env(LOCAL).engine_http_host == "127.0.0.1"
    assert Settings.from_env({}).engine_http_host == "0.0.0.0"
    assert Settings.from_env({**LOCAL, "ENGINE_HTTP_HOST": "0.0.0.0"}).engine_http_host == "0.0.0.0"


def test_engine_poll_floor_is_10_ms_locally_and_200_ms_on_aws():
    assert Settings.from_env(LOCAL).engine_poll_floor_ms == 10
    assert Settings.from_env({}).engine_poll_floor_ms == 200
    assert Settings.from_env({"ENGINE_POLL_FLOOR_MS": "50"}).engine_poll_floor_ms == 50


def test_empty_variables_count_as_unset():
    blank = {name: "" for name in ("ENGINE_HTTP_PORT", "STREAMER_HTTP_PORT", "VALKEY_PORT", "KINESIS_FILLS_STREAM",
                                   "AWS_REGION", "DEPTH_CACHE_URL", "LOG_LEVEL", "ALLOW_TEST_MODE")}
    s = Settings.from_env({**blank, "VALKEY_HOST": "dh", "STREAMER_TRANSPORT": "  "})
    d = Settings.from_env({"VALKEY_HOST": "dh"})
    assert (s.engine_http_port, s.streamer_http_port, s.fills_stream, s.aws_region, s.log_level) == (
        9100, 9101, "supernoba-fills", "ap-northeast-2", "INFO")
    assert s.depth_cache_url == d.depth_cache_url == "redis://dh:6379/0"
    assert s.allow_test_mode is False and s.streamer_transport == "fast"


def test_the_static_admin_key_works_on_the_local_stage_only():
    assert Settings.from_env({"ADMIN_API_KEY": "k"}).admin_api_key == "k"  # no stage set: local
    assert Settings.from_env({"ADMIN_API_KEY": "k", "SUPERNOBA_STAGE": "local"}).admin_api_key == "k"
    for stage in ("dev", "prod"):
        assert Settings.from_env({"ADMIN_API_KEY": "k", "SUPERNOBA_STAGE": stage}).admin_api_key == ""


def test_unset_variables_give_the_settings_field_defaults():
    """Each default is written once, as a `Settings` field default (AWS side of the engine's)."""
    import dataclasses

    s = Settings.from_env({})
    for f in dataclasses.fields(Settings):
        if f.name != "extra":
            assert getattr(s, f.name) == f.default, f.name


def test_streamer_options_defaults_are_the_settings_defaults():
    from streamer_pkg.tiers import StreamerOptions

    assert StreamerOptions() == StreamerOptions.from_settings(Settings.from_env({}))


def test_env_table_names_are_the_variable_names():
    from chalice_app.config import ENV

    names = {k: v for k, v in vars(ENV).items() if k.isupper()}
    assert names and all(k == v for k, v in names.items())


def test_ops_servers_listen_on_loopback_next_to_the_emulators_and_everywhere_on_ec2():
    aws = Settings.from_env({})
    assert (aws.engine_http_host, aws.streamer_http_host) == ("0.0.0.0", "0.0.0.0")
    local = Settings.from_env({"AWS_ENDPOINT_URL_KINESIS": "http://127.0.0.1:4567"})
    assert (local.engine_http_host, local.streamer_http_host) == ("127.0.0.1", "127.0.0.1")
    assert Settings.from_env({"STREAMER_HTTP_HOST": "10.0.0.5"}).streamer_http_host == "10.0.0.5"
    from streamer_pkg.tiers import StreamerOptions

    assert StreamerOptions.from_settings(local).http_host == "127.0.0.1"


def test_engine_parse_thread_is_auto_on_or_off():
    assert Settings.from_env({}).engine_parse_thread is None
    assert Settings.from_env({"ENGINE_PARSE_THREAD": "auto"}).engine_parse_thread is None
    for word, want in (("on", True), ("TRUE", True), ("1", True), ("off", False), (" no ", False), ("0", False)):
        assert Settings.from_env({"ENGINE_PARSE_THREAD": word}).engine_parse_thread is want
    with pytest.raises(ValueError, match=r"^ENGINE_PARSE_THREAD must be auto, on or off, not 'sometimes'$"):
        Settings.from_env({"ENGINE_PARSE_THREAD": "sometimes"})


#: every numeric variable and the `Settings` field it sets (VALKEY_PORT goes into depth_cache_url)
NUMERIC = {
    "ENGINE_HTTP_PORT": "engine_http_port", "STREAMER_HTTP_PORT": "streamer_http_port",
    "ENGINE_POLL_FLOOR_MS": "engine_poll_floor_ms", "ENGINE_POLL_IDLE_MAX_MS": "engine_poll_idle_max_ms",
    "ENGINE_POLL_HOT_MS": "engine_poll_hot_ms", "ENGINE_GET_LIMIT": "engine_get_limit",
    "ENGINE_GET_TIMEOUT_MS": "engine_get_timeout_ms", "ENGINE_SNAPSHOT_RECORDS": "engine_snapshot_records",
    "ENGINE_SNAPSHOT_SECONDS": "engine_snapshot_seconds", "ENGINE_LEASE_TTL_MS": "engine_lease_ttl_ms",
    "FILLS_TRIGGER_BATCH_SIZE": "fills_trigger_batch_size", "STATUS_TRIGGER_BATCH_SIZE": "status_trigger_batch_size",
    "STREAMER_REALTIME_MS": "streamer_realtime_ms", "STREAMER_ANON_MS": "streamer_anon_ms",
    "STREAMER_CONCURRENCY": "streamer_concurrency", "STREAMER_SLOW_CONCURRENCY": "streamer_slow_concurrency",
    "STREAMER_SEND_TIMEOUT": "streamer_send_timeout_s", "STREAMER_RETRIES": "streamer_retries",
    "STREAMER_MEMBERSHIP_MS": "streamer_membership_ms",
}


def test_the_numeric_table_covers_every_numeric_setting():
    import dataclasses

    assert set(NUMERIC.values()) == {f.name for f in dataclasses.fields(Settings) if f.type in ("int", "float")}


@pytest.mark.parametrize("var", [*NUMERIC, "VALKEY_PORT"])
def test_a_numeric_variable_that_is_not_a_number_is_an_error_naming_it_and_its_value(var):
    # "9" * 400 overflowed math.isfinite() (OverflowError, not ValueError: a traceback at start)
    for bad in ("abc", "nan", "inf", "12abc", "9" * 400, "-" + "9" * 400):
        with pytest.raises(ValueError, match=rf"^{var} must be a (whole )?number.*, got '{bad}'$"):
            Settings.from_env({var: bad})


@pytest.mark.parametrize("var", [v for v, name in NUMERIC.items() if Settings.__dataclass_fields__[name].type == "int"])
def test_an_int_setting_takes_a_whole_number_only(var):
    assert getattr(Settings.from_env({var: " 700 "}), NUMERIC[var]) == 700
    with pytest.raises(ValueError, match=rf"^{var} must be a whole number, got '7.5'$"):
        Settings.from_env({var: "7.5"})


def test_ports_must_be_tcp_ports():
    for var in ("ENGINE_HTTP_PORT", "STREAMER_HTTP_PORT", "VALKEY_PORT"):
        for bad in ("-1", "65536"):
            with pytest.raises(ValueError, match=rf"^{var} must be a whole number from 0 to 65535, got '{bad}'$"):
                Settings.from_env({var: bad})
    s = Settings.from_env({"ENGINE_HTTP_PORT": "0", "STREAMER_HTTP_PORT": "65535", "VALKEY_PORT": "6380"})
    assert (s.engine_http_port, s.streamer_http_port, s.depth_cache_url) == (0, 65535, "redis://127.0.0.1:6380/0")
    # a VALKEY_PORT that is not used (DEPTH_CACHE_URL wins) is not read
    assert Settings.from_env({"VALKEY_PORT": "x", "DEPTH_CACHE_URL": "redis://h:1/0"}).depth_cache_url == "redis://h:1/0"


def test_the_backup_cache_defaults_to_the_depth_cache_server():
    """With neither BACKUP_CACHE_URL nor REDIS_HOST, the backup cache shares the depth cache's
    server (SPEC §11: both caches on one Valkey), not a 127.0.0.1:6379 that may not exist."""
    assert Settings.from_env({"DEPTH_CACHE_URL": "redis://127.0.0.1:7000/0"}).backup_cache_url == \
        "redis://127.0.0.1:7000/0"
    assert Settings.from_env({"VALKEY_HOST": "v", "VALKEY_PORT": "7001"}).backup_cache_url == "redis://v:7001/0"
    assert Settings.from_env({"DEPTH_CACHE_HOST": "d", "REDIS_HOST": "r"}).backup_cache_url == "redis://r:6379/0"
    assert Settings.from_env({"DEPTH_CACHE_HOST": "d", "BACKUP_CACHE_URL": "redis://b:1/2"}).backup_cache_url == \
        "redis://b:1/2"


def test_a_cache_host_may_carry_its_port():
    """`HOST:PORT`, as the ElastiCache console shows an endpoint, gives that port (it made
    `redis://HOST:PORT:6379/0`, a URL no Valkey client can use)."""
    s = Settings.from_env({"DEPTH_CACHE_HOST": "d.cache.amazonaws.com:6380", "REDIS_HOST": "10.0.0.7:6390"})
    assert (s.depth_cache_url, s.backup_cache_url) == ("redis://d.cache.amazonaws.com:6380/0",
                                                       "redis://10.0.0.7:6390/0")
    assert Settings.from_env({"VALKEY_HOST": "v:7001"}).depth_cache_url == "redis://v:7001/0"
    with pytest.raises(ValueError, match="DEPTH_CACHE_HOST"):
        Settings.from_env({"DEPTH_CACHE_HOST": "d:70000"})


def test_a_wss_websocket_endpoint_is_taken_as_https():
    """`chalice deploy` prints the WebSocket API as wss://...; the @connections API is https://."""
    url = "https://abc.execute-api.ap-northeast-2.amazonaws.com/api"
    assert Settings.from_env({"WEBSOCKET_ENDPOINT": "wss://abc.execute-api.ap-northeast-2.amazonaws.com/api/"}
                             ).websocket_endpoint == url
    assert Settings.from_env({"WEBSOCKET_ENDPOINT": url}).websocket_endpoint == url
    assert Settings.from_env({"WEBSOCKET_ENDPOINT": "ws://127.0.0.1:8001"}).websocket_endpoint == "http://127.0.0.1:8001"
