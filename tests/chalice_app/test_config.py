"""chalice_app.config: the one place every setting is read; engine defaults that depend on
whether Kinesis is an emulator (a laptop) or AWS."""

from __future__ import annotations

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
