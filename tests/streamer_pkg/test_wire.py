"""The lean PostToConnection path: `wire.WireClient` and `transport.FastTransport` against a small
HTTP server in the test that answers what API Gateway may answer (and some oddities)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from chalice_app import connections, keys
from streamer_pkg.fanout import Fanout
from streamer_pkg.metrics import Metrics
from streamer_pkg.transport import ConnectionGone, FastTransport, PermanentError, RetryableError
from streamer_pkg.wire import WireClient, WireError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
GONE = (b"HTTP/1.1 410 Gone\r\nx-amzn-ErrorType: GoneException:http://internal.amazon.com/\r\n"
        b"Content-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"message\":null}")


class Server:
    """Raw HTTP/1.1 server: `answer(method, path, headers, body) -> bytes | None` (None = hang up)."""

    def __init__(self, answer: Callable[[str, str, dict[str, str], bytes], bytes | None]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *lines = head.decode().split("\r\n")
                method, path, _ = line.split(" ")
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines if h)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                self.requests.append((method, path, headers, body))
                out = self.answer(method, path, headers, body)
                if asyncio.iscoroutine(out):
                    out = await out
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(asyncio.wait_for(coro, 20))


def _session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="AKID", aws_secret_access_key="SECRET", aws_session_token="TOKEN",
                         region_name="ap-northeast-2")


def test_signed_request_on_the_wire_matches_botocore():
    async def main() -> None:
        async with Server(lambda *_: OK) as srv:
            t = FastTransport(f"http://127.0.0.1:{srv.port}/api", None, region="ap-northeast-2", session=_session())
            await t.post("a/b+c=", b'{"e":"d"}')
            await t.aclose()
            method, path, headers, body = srv.requests[0]
            assert (method, path, body) == ("POST", "/api/@connections/a%2Fb%2Bc%3D", b'{"e":"d"}')
            ref = AWSRequest(method="POST", url=f"http://127.0.0.1:{srv.port}{path}", data=body,
                             headers={"X-Amz-Date": headers["x-amz-date"]})
            signer = SigV4Auth(_session().get_credentials().get_frozen_credentials(), "execute-api", "ap-northeast-2")
            ref.context["timestamp"] = headers["x-amz-date"]
            signer._modify_request_before_signing(ref)  # noqa: SLF001  (same date as sent)
            want = signer.signature(signer.string_to_sign(ref, signer.canonical_request(ref)), ref)
            assert headers["authorization"].endswith("Signature=" + want)
            assert headers["x-amz-security-token"] == "TOKEN"
            assert headers["host"] == f"127.0.0.1:{srv.port}"
    run(main())


def test_keep_alive_reuse_chunked_close_and_interim_answers():
    answers = iter([
        OK, OK,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        OK + b"stray bytes",  # the answer stands; the connection is not reused
        OK,
    ])

    async def main() -> None:
        async with Server(lambda *_: next(answers)) as srv:
            c = WireClient("127.0.0.1", srv.port, timeout=2)
            req = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
            statuses = [(await c.post(req)) for _ in range(7)]
            assert [r.status for r in statuses] == [200, 200, 200, 200, 204, 200, 200]
            assert statuses[2].body == b"abcde" and statuses[3].body == b"ok"
            assert srv.connections == 3  # reused until Connection: close, and after the stray bytes
            assert c.resent == 0
            await c.aclose()
    run(main())


def test_timeout_and_refused_and_stale_keep_alive():
    async def slow(*_: object) -> bytes:
        await asyncio.sleep(1.0)
        return OK

    async def main() -> None:
        async with Server(slow) as srv:
            c = WireClient("127.0.0.1", srv.port, timeout=0.2)
            with pytest.raises(WireError) as err:
                await c.post(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
            assert err.value.kind == "timeout"
            await c.aclose()
        calls = {"n": 0}

        def hang_up_after_first(*_: object) -> bytes | None:
            calls["n"] += 1
            return OK if calls["n"] % 2 else None  # every second request on a connection: closed

        async with Server(hang_up_after_first) as srv:
            c = WireClient("127.0.0.1", srv.port, timeout=2)
            req = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
            assert (await c.post(req)).status == 200
            assert (await c.post(req)).status == 200  # stale connection: written again on a new one
            assert c.resent == 1
            await c.aclose()
            port = srv.port
        c = WireClient("127.0.0.1", port, timeout=2)
        with pytest.raises(WireError) as err:
            await c.post(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        assert err.value.kind == "connection"
    run(main())


def test_fast_transport_outcomes(depth_cache):
    """2xx → ok; 410 GoneException → the shared cleanup removes the id from every set; 5xx/429 →
    retryable; 403 → permanent."""
    connections.register_connection(depth_cache, "gone1=", "u1", is_logged_in=True)
    connections.subscribe(depth_cache, "gone1=", main="AAA", subs=("BBB",))
    by_id = {"ok=": OK, "gone1=": GONE,
             "busy=": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
             "slow=": b"HTTP/1.1 429 Too Many Requests\r\nx-amzn-ErrorType: LimitExceededException\r\nContent-Length: 0\r\n\r\n",
             "no=": b"HTTP/1.1 403 Forbidden\r\nx-amzn-ErrorType: ForbiddenException\r\nContent-Length: 0\r\n\r\n"}

    async def main() -> None:
        async with Server(lambda m, path, h, b: by_id[path.rsplit("/", 1)[1].replace("%3D", "=")]) as srv:
            t = FastTransport(f"http://127.0.0.1:{srv.port}/api", depth_cache, region="ap-northeast-2",
                              session=_session())
            await t.post("ok=", b"x")
            with pytest.raises(ConnectionGone):
                await t.post("gone1=", b"x")
            with pytest.raises(RetryableError) as e5:
                await t.post("busy=", b"x")
            with pytest.raises(RetryableError) as e429:
                await t.post("slow=", b"x")
            with pytest.raises(PermanentError) as e403:
                await t.post("no=", b"x")
            assert (e5.value.kind, e429.value.kind, e403.value.kind) == ("http_5xx", "throttled", "http_403")
            await t.aclose()
    run(main())
    assert not depth_cache.sismember(keys.REALTIME_CONNECTIONS, "gone1=")
    assert not depth_cache.sismember(keys.symbol_main("AAA"), "gone1=")
    assert not depth_cache.sismember(keys.symbol_sub("BBB"), "gone1=")


def test_fanout_over_fast_transport_keeps_order_and_retries_5xx():
    """Through the fan-out: per-connection order kept across many in-flight requests; a 503 is
    retried with backoff and then delivered, in order."""
    failed: set[bytes] = set()

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if body.endswith(b":3") and body not in failed:  # every connection's 4th message fails once
            failed.add(body)
            return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        return OK

    async def main() -> None:
        async with Server(answer) as srv:
            t = FastTransport(f"http://127.0.0.1:{srv.port}/api", None, region="ap-northeast-2", session=_session())
            metrics = Metrics()
            fan = Fanout(t, metrics, concurrency=16, backoff=0.02)
            fan.start()
            ids = [f"c{i}=" for i in range(40)]
            for n in range(6):
                for cid in ids:
                    fan.submit(cid, None, f"{cid}:{n}".encode())
            assert await fan.drain(10)
            await fan.stop()
            await t.aclose()
            got: dict[str, list[int]] = {}
            for *_, body in srv.requests:
                cid, n = body.decode().split(":")
                got.setdefault(cid, []).append(int(n))
            for cid in ids:
                assert got[cid] == [0, 1, 2, 3, 3, 4, 5]  # the failed 4th retried before the 5th
            assert metrics.sends == 240 and metrics.errors["http_5xx"] == 40
            assert t.client.connections() <= 16 + 8
    run(main())


def test_fanout_coalescing_skips_connections_that_hold_the_key():
    """A newer message for a key that 1,000 connections still hold is one cell write: they get
    only the newest data, once; connections that did not hold it are queued; nothing is lost
    when a send is in flight while the cell changes."""
    sent: list[tuple[str, bytes]] = []
    gate = asyncio.Event()

    class Gated:
        async def post(self, conn_id: str, data: bytes) -> None:
            await gate.wait()
            sent.append((conn_id, data))

        async def aclose(self) -> None:
            pass

    async def main() -> None:
        metrics = Metrics()
        fan = Fanout(Gated(), metrics, concurrency=4)
        fan.start()
        ids = frozenset(f"c{i}" for i in range(1000))
        fan.submit_many(ids, ("rt", ("d", "S")), b"v1")
        await asyncio.sleep(0.01)  # 4 sends in flight with v1
        fan.submit_many(ids, ("rt", ("d", "S")), b"v2")
        assert metrics.counters["streamer_coalesced_total"] == 1000
        more = frozenset(f"n{i}" for i in range(10))
        fan.submit_many(ids | more, ("rt", ("d", "S")), b"v3")
        assert metrics.counters["streamer_coalesced_total"] == 2000
        gate.set()
        assert await fan.drain(10)
        await fan.stop()
        last = {}
        for cid, data in sent:
            last[cid] = data
        assert set(last) == ids | more and set(last.values()) == {b"v3"}
        assert len(sent) == 1010 + 4  # the 4 in flight with v1 are sent v3 after that
        assert not fan._holding[("rt", ("d", "S"))]  # noqa: SLF001  (released after each send)
    run(main())


def test_fanout_equal_data_for_a_new_subscriber_is_not_resent_to_one_in_flight():
    """A new subscriber's snapshot of unchanged data rewrites the key's cell with EQUAL bytes (a
    new object) while a connection holding that key has it in flight: that connection gets the
    data once, not again (issue 6: unchanged data is not resent); newer bytes still follow."""
    sent: list[tuple[str, bytes]] = []
    gate = asyncio.Event()

    class Gated:
        async def post(self, conn_id: str, data: bytes) -> None:
            if conn_id == "old":
                await gate.wait()
            sent.append((conn_id, data))

        async def aclose(self) -> None:
            pass

    async def main() -> None:
        fan = Fanout(Gated(), Metrics(), concurrency=4)
        fan.start()
        key = ("rt", ("d", "S"))
        fan.submit("old", key, b"u=7")
        await asyncio.sleep(0.01)  # in flight, held at the gate
        fan.submit("new", key, b"u=7")  # the snapshot for a new subscriber: equal data, a new entry
        await asyncio.sleep(0.01)
        gate.set()
        assert await fan.drain(10)
        assert sorted(sent) == [("new", b"u=7"), ("old", b"u=7")]
        gate.clear()
        fan.submit("old", key, b"u=8")
        await asyncio.sleep(0.01)
        fan.submit("new", key, b"u=9")  # newer data while in flight: still sent after
        gate.set()
        assert await fan.drain(10)
        await fan.stop()
        assert [d for c, d in sent if c == "old"] == [b"u=7", b"u=8", b"u=9"]
    run(main())


def test_chalice_websocket_api_over_the_lean_client():
    """Chalice's `WebsocketAPI.send` with `LeanManagementClient` underneath (what the session
    wrapper of `ChaliceTransport(lean=True)` hands it): 2xx sent; 410 → Chalice's
    `WebsocketDisconnectedError`; 5xx → botocore `ClientError` with the status; a closed
    keep-alive connection is replaced; other methods go to the botocore client."""
    from botocore.exceptions import ClientError
    from chalice.app import WebsocketAPI, WebsocketDisconnectedError

    from streamer_pkg.transport import ChaliceTransport

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes | None:
        last = path.rsplit("/", 1)[1]
        if last == "gone%3D":
            return GONE
        if last == "err":
            return b"HTTP/1.1 500 Internal Server Error\r\nx-amzn-ErrorType: InternalServerErrorException\r\nContent-Length: 0\r\n\r\n"
        if last == "closing":
            return OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        return OK

    async def main() -> None:
        async with Server(answer) as srv:
            endpoint = f"http://127.0.0.1:{srv.port}/api"
            t = ChaliceTransport(endpoint, None, region="ap-northeast-2", session=_session(), threads=2, lean=True)
            api: WebsocketAPI = t.sender.api
            assert type(api._get_client()).__name__ == "LeanManagementClient"  # noqa: SLF001

            def calls() -> None:
                api.send("ok=", '{"e":"d"}')
                api.send("closing", "x")  # the server closes after answering
                api.send("ok=", "y")  # on a new connection
                with pytest.raises(WebsocketDisconnectedError):
                    api.send("gone=", "z")
                with pytest.raises(ClientError) as err:
                    api.send("err", "z")
                assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
                assert err.value.response["Error"]["Code"] == "InternalServerErrorException"

            await asyncio.to_thread(calls)
            assert srv.connections == 2
            method, path, headers, body = srv.requests[0]
            assert (method, path, body) == ("POST", "/api/@connections/ok%3D", b'{"e":"d"}')
            assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")
            assert headers["x-amz-security-token"] == "TOKEN"
            with pytest.raises(ConnectionGone):  # and through the transport: 410 → gone
                await t.post("gone=", b"x")
            with pytest.raises(RetryableError):
                await t.post("err", b"x")
            await t.aclose()
    run(main())


def test_tls(tmp_path):
    """`https://` endpoints (API Gateway's): TLS with certificate and host name checks."""
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    trusting = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))

    async def main() -> None:
        received = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    received.append(await reader.readexactly(length))
                    writer.write(OK)
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        c = WireClient("127.0.0.1", port, tls=True, server_hostname="localhost", ssl_context=trusting)
        for body in (b"one", b"two"):
            req = b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\n" + body
            assert (await c.post(req)).status == 200
        assert received == [b"one", b"two"] and c.opened == 1
        await c.aclose()
        untrusting = WireClient("127.0.0.1", port, tls=True, server_hostname="localhost")  # system CAs only
        with pytest.raises(WireError):
            await untrusting.post(b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        server.close()
    run(main())
