"""Builds every service `app.py` uses, once, from one `Settings` (or an injected one in tests).

    services = build(Settings.from_env())

Clients are lazy (no network at build time), so building at import is cheap and works
where no backing service exists (packaging, `chalice package`). Redis clients get short
timeouts; boto3 clients a small retry budget so that a Lambda fails fast, not after minutes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
import redis
from botocore.config import Config

from chalice_app import cache
from chalice_app.auth import Authenticator
from chalice_app.backup import CandleBackup
from chalice_app.candles import CandleStore
from chalice_app.config import Settings
from chalice_app.market import MarketData
from chalice_app.notify import Notifier
from chalice_app.orders import OrderRouter
from chalice_app.symbols import SymbolRegistry
from chalice_app.ws_handlers import Reply, WsService
from chalice_app.ws_send import WsSender

log = logging.getLogger("supernoba.services")

_BOTO_CONFIG = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis | cache.LazyClient  # LazyClient resolves to redis.Redis or RedisCluster
    kinesis: Any
    dynamodb: Any
    s3: Any
    auth: Authenticator
    symbols: SymbolRegistry
    orders: OrderRouter
    market: MarketData
    ws: WsService
    sender: WsSender
    notifier: Notifier
    backup: CandleBackup
    _reply_senders: dict[str, WsSender] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reply_sender(self, domain_name: str | None = None, stage: str | None = None) -> WsSender:
        """The sender for answers inside a WebSocket handler: WEBSOCKET_ENDPOINT when set,
        else the API Gateway endpoint the event came from (`https://{domain}/{stage}`)."""
        if self.sender.configured or not domain_name:
            return self.sender
        endpoint = f"https://{domain_name}/{stage}" if stage else f"https://{domain_name}"
        with self._lock:
            if endpoint not in self._reply_senders:
                self._reply_senders[endpoint] = WsSender(endpoint, self.redis, region=self.settings.aws_region)
            return self._reply_senders[endpoint]

    def send_replies(self, conn_id: str, replies: list[Reply], domain_name: str | None = None,
                     stage: str | None = None) -> None:
        sender = self.reply_sender(domain_name, stage)
        if not sender.configured:
            log.warning("event=ws_reply_dropped conn=%s reason=no_endpoint n=%d", conn_id, len(replies))
            return
        for reply in replies:
            sender.send_many([conn_id], reply)


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    level = "DEBUG" if settings.debug_mode else settings.log_level
    root.setLevel(getattr(logging, level, logging.INFO))
    logging.getLogger("supernoba").setLevel(getattr(logging, level, logging.INFO))


def build(settings: Settings, *, session: boto3.Session | None = None) -> Services:
    session = session or boto3.Session(region_name=settings.aws_region)
    # lazy: a cluster client connects when built, and building happens at import (chalice_app.cache)
    r = cache.lazy_client(settings.depth_cache_url, settings.cache_cluster_mode, socket_timeout=3,
                          socket_connect_timeout=3, health_check_interval=30)
    kinesis = session.client("kinesis", config=_BOTO_CONFIG)
    dynamodb = session.resource("dynamodb", config=_BOTO_CONFIG)
    s3 = session.client("s3", config=_BOTO_CONFIG)
    auth = Authenticator(settings)
    symbols = SymbolRegistry(r)
    store = CandleStore(dynamodb.Table(settings.candle_table))
    sender = WsSender.from_settings(settings, r)
    return Services(
        settings=settings,
        redis=r,
        kinesis=kinesis,
        dynamodb=dynamodb,
        s3=s3,
        auth=auth,
        symbols=symbols,
        orders=OrderRouter(r, kinesis, settings.orders_stream, symbols),
        market=MarketData(r, store, symbols, kinesis, settings.orders_stream),
        ws=WsService(r, auth, symbols),
        sender=sender,
        notifier=Notifier(r, sender, dynamodb.Table(settings.trade_table)),
        backup=CandleBackup(r, s3, settings.backup_bucket, store),
    )
