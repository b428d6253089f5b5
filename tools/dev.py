"""`make dev`: the whole exchange on one machine, on loopback only (SPEC §11).

Starts, in this order, and stops in the reverse order on Ctrl-C / SIGTERM:

1. the backing services (`tools/services.LocalServices`: valkey-server, kinesalite,
   dynalite, moto's S3) with their data in the data folder (default `.local/`), and the
   AWS resources (`tools/provision.py`);
2. the Chalice app, loaded through Chalice's own config loader for the `local` stage (so
   the stage's environment variables apply), and served three ways from the SAME app
   object in this process: its REST routes (`chalice.local.create_local_server`), its
   WebSocket handlers (`tools/gateway.py`, with the `@connections` API on the same port)
   and its Kinesis triggers and schedules (`tools/pump.py`);
3. symbol `TEST` activated through the admin API on the first start of a data folder;
4. the engine (`python -m engine_pkg`) and the streamer (`python -m streamer_pkg`) as
   child processes (restarted with backoff if they die), and the test console
   (`tools/console/serve.py`); with `--simulate`, the market simulator.

Then it prints a status table (each part, its URL or port, healthy or not) and the
ADMIN_API_KEY. Logs go to `<data>/logs/` (one file per part, `dev.log` has everything);
`<data>/run/env.json` holds the environment of the running stack (read by
`python -m tools.pump invoke NAME`) and `<data>/run/stack.json` its URLs.

`LocalStack(DevConfig(...))` is the same thing as a class; the end-to-end test and the
benchmark run `python -m tools.dev` itself in a subprocess.

Errors::

    DevError
     ├── PortBusy        a fixed port is taken (each has a flag to move it)
     ├── AlreadyRunning  another `make dev` uses the same data folder
     └── PartFailed      a part could not be started (the message says which; see its log)
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chalice_app.config import ENV, Settings
from tools.ports import DEFAULT_API_STAGE, DEFAULT_PORTS, LOCAL_HOST, rest_url, ws_url
from tools.services import REPO_ROOT, LocalServices, free_port, port_open, stop_process_group

log = logging.getLogger("supernoba.dev")
REST_LISTEN_BACKLOG = 512

FIRST_SYMBOL = "TEST"
#: the data folder of `make dev` (and of `make invoke` without ARGS)
DEFAULT_DATA_DIR = Path(".local")


class DevError(RuntimeError):
    """The local stack could not be started."""


class PortBusy(DevError):
    """A port the stack needs is in use."""


class AlreadyRunning(DevError):
    """Another local stack runs on the same data folder."""


def check_not_running(data_dir: Path) -> None:
    """Raise AlreadyRunning when a live stack owns ``data_dir`` (its ``run/dev.pid`` names a live
    process other than this one). Checked before anything touches the folder, ``--reset`` too."""
    pid_file = data_dir / "run" / "dev.pid"
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return
    try:
        pid = int(text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return
    except PermissionError:
        raise AlreadyRunning(f"a local stack (pid {text}) uses {data_dir}") from None
    if pid != os.getpid():
        raise AlreadyRunning(f"a local stack (pid {pid}) already uses {data_dir}; stop it first, or pass "
                             "another --data-dir")


class PartFailed(DevError):
    """One part did not start."""


# --------------------------------------------------------------------- the Chalice app
def load_app(stage: str = "local", project_dir: Path = REPO_ROOT) -> tuple[Any, Any] | Any:
    """The repo's Chalice app, loaded by Chalice's CLI factory for `stage`.

    The stage's `environment_variables` from `.chalice/config.json` are applied to
    `os.environ` before `app.py` is imported, exactly as `chalice local --stage` does.
    """
    return load_app_and_config(stage, project_dir)[0]


def load_app_and_config(stage: str = "local", project_dir: Path = REPO_ROOT) -> tuple[Any, Any]:
    from chalice.cli.factory import CLIFactory
    from chalice.deploy.validate import ExperimentalFeatureError

    factory = CLIFactory(project_dir=str(project_dir), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    try:
        return config.chalice_app, config
    except ExperimentalFeatureError as exc:
        # `chalice local` would stop here; the app is still servable, so say it and go on
        log.warning("event=app_feature_flags_missing stage=%s detail=%s", stage, " ".join(str(exc).split())[:300])
        print("warning: app.py uses experimental Chalice features without opting in "
              "(app.experimental_feature_flags); `chalice deploy` will refuse it", file=sys.stderr)
        app = factory.load_chalice_app(config.environment_variables, validate_feature_flags=False)
        return app, config


# --------------------------------------------------------------------- configuration
@dataclass
class DevConfig:
    data_dir: Path = Path(".local")
    host: str = LOCAL_HOST
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    service_ports: dict[str, int] = field(default_factory=dict)
    valkey_cluster: bool = False  # both caches on a 3-primary cluster (CACHE_CLUSTER_MODE=on)
    stage: str = "local"
    simulate: bool = False
    engine: bool = True
    streamer: bool = True
    console: bool = True
    schedules: bool = True
    log_level: str = "INFO"
    quiet: bool = False
    health_timeout: float = 60.0


@dataclass
class PartStatus:
    name: str
    url: str
    healthy: bool
    detail: str = ""


def _http_ok(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return 200 <= resp.status < 300, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


class _ChildProcess:
    """A supervised child (engine, streamer): restarted with backoff when it dies."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path, health_url: str) -> None:
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log_path = log_path
        self.health_url = health_url
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = False
        self._lock = threading.Lock()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT), start_new_session=True)
        out.close()
        log.info("event=child_started part=%s pid=%d cmd=%s", self.name, self.proc.pid, " ".join(self.cmd))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def supervise(self) -> None:
        """Restart once if it died (called periodically); gives up after 5 restarts."""
        with self._lock:
            if self._stopping or self.proc is None or self.proc.poll() is None:
                return
            code = self.proc.returncode
            if self.restarts >= 5:
                return
            self.restarts += 1
            log.error("event=child_died part=%s code=%s restart=%d log=%s", self.name, code, self.restarts,
                      self.log_path)
            time.sleep(min(10.0, 0.5 * 2 ** self.restarts))
            if not self._stopping:
                self.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            proc, self.proc = self.proc, None
        if stop_process_group(proc, timeout, name=self.name):
            log.info("event=child_stopped part=%s code=%s", self.name, proc.returncode)


class _PartFilter(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...], exclude: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.exclude = exclude

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if any(name == e or name.startswith(e + ".") for e in self.exclude):
            return False
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)


_OWN_LOGGERS = ("supernoba.dev", "supernoba.gateway", "supernoba.pump", "supernoba.simulator",
                "supernoba.console", "supernoba.services", "supernoba.rest", "supernoba.provision")


def setup_logging(log_dir: Path, level: str = "INFO", console_level: int = logging.ERROR) -> list[logging.Handler]:
    """dev.log gets everything; gateway/pump/rest/console/simulator/app get their own files."""
    log_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    handlers: list[logging.Handler] = []

    def add(path: str, flt: logging.Filter | None) -> None:
        h = logging.FileHandler(log_dir / path)
        h.setFormatter(fmt)
        if flt is not None:
            h.addFilter(flt)
        root.addHandler(h)
        handlers.append(h)

    add("dev.log", None)
    add("gateway.log", _PartFilter(("supernoba.gateway", "aiohttp")))
    add("pump.log", _PartFilter(("supernoba.pump",)))
    add("rest.log", _PartFilter(("supernoba.rest",)))
    add("console.log", _PartFilter(("supernoba.console",)))
    add("simulator.log", _PartFilter(("supernoba.simulator",)))
    add("app.log", _PartFilter(("supernoba",), exclude=_OWN_LOGGERS))
    term = logging.StreamHandler(sys.stderr)
    term.setLevel(console_level)
    term.setFormatter(fmt)
    root.addHandler(term)
    handlers.append(term)
    for noisy in ("botocore", "boto3", "urllib3", "aiohttp.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handlers


class _ControlServer:
    """Loopback HTTP endpoint of the running stack: `POST /invoke/NAME` fires a schedule in the
    running pump (what `make invoke NAME=...` calls); answers {"name","ms","result"}, 404 for an
    unknown name, 500 {"name","error"} when the handler raised."""

    def __init__(self, host: str, pump: Any) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from tools.pump import UnknownHandler

        control_log = logging.getLogger("supernoba.dev.control")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                control_log.info("client=%s %s", self.address_string(), format % args)

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                if self.path == "/schedules":
                    self._answer(200, {"schedules": pump.handler_names("schedule"), "stats": pump.stats()})
                else:
                    self._answer(404, {"error": f"unknown path {self.path}"})

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if not self.path.startswith("/invoke/"):
                    self._answer(404, {"error": f"unknown path {self.path}"})
                    return
                name = self.path[len("/invoke/"):]
                started = time.perf_counter()
                try:
                    result = pump.invoke(name)
                except UnknownHandler as exc:
                    self._answer(404, {"name": name, "error": str(exc)})
                    return
                except Exception as exc:  # the handler failed: logged by the pump, reported here
                    self._answer(500, {"name": name, "error": repr(exc)})
                    return
                self._answer(200, {"name": name, "ms": round((time.perf_counter() - started) * 1000, 1),
                                   "result": result})

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="dev-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# --------------------------------------------------------------------- the stack
class LocalStack:
    """Every part of the local exchange; `start()` then `stop()` (or a `with` block)."""

    def __init__(self, cfg: DevConfig, out: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.data_dir = cfg.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.run_dir = self.data_dir / "run"
        self.ports = dict(cfg.ports)
        self._out = out or (lambda line: None if cfg.quiet else print(line, flush=True))
        self.services: LocalServices | None = None
        self.app: Any = None
        self.rest: Any = None
        self._rest_thread: threading.Thread | None = None
        self.gateway: Any = None
        self.pump: Any = None
        self.control: _ControlServer | None = None
        self.console: Any = None
        self.simulator: Any = None
        self.children: dict[str, _ChildProcess] = {}
        self.env: dict[str, str] = {}
        self.admin_key = ""
        self.api_stage = DEFAULT_API_STAGE
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._pid_file = self.run_dir / "dev.pid"
        self._owns_pid = False

    # ----------------------------------------------------------------- URLs
    @property
    def rest_url(self) -> str:
        return rest_url(self.cfg.host, self.ports["rest"])

    @property
    def ws_url(self) -> str:
        return ws_url(self.cfg.host, self.ports["ws"], self.api_stage)

    @property
    def connections_url(self) -> str:
        return f"http://{self.cfg.host}:{self.ports['ws']}/{self.api_stage}"

    @property
    def console_url(self) -> str:
        return f"http://{self.cfg.host}:{self.ports['console']}/"

    def say(self, line: str) -> None:
        self._out(line)

    # ----------------------------------------------------------------- start
    def start(self) -> LocalStack:
        t0 = time.monotonic()
        try:
            self._prepare()
            self._step("services", self._start_services)
            self._step("AWS resources", self._provision)
            self._step("Chalice app", self._load_app)
            self._step("REST API", self._start_rest)
            self._step("WebSocket gateway", self._start_gateway)
            self._step("event pump", self._start_pump)
            self._step(f"symbol {FIRST_SYMBOL}", self._first_start)
            if self.cfg.engine:
                self._step("engine", lambda: self._start_child("engine", [sys.executable, "-m", "engine_pkg"]))
            if self.cfg.streamer:
                self._step("streamer", lambda: self._start_child("streamer", [sys.executable, "-m", "streamer_pkg"]))
            if self.cfg.console:
                self._step("console", self._start_console)
            self._step("(waiting until every part is healthy)", self._wait_healthy)
            if self.cfg.simulate:
                self._step("simulator", self._start_simulator)
        except BaseException:
            self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="dev-supervisor", daemon=True)
        self._supervisor.start()
        self._write_run_files()
        self.say(f"ready in {time.monotonic() - t0:.1f}s")
        return self

    def _step(self, what: str, fn: Callable[[], Any]) -> None:
        t = time.monotonic()
        self.say(f"  {what} ..." if what.startswith("(") else f"  starting {what} ...")
        try:
            fn()
        except DevError:
            raise
        except Exception as exc:  # the layer boundary: any failure of a part names that part
            raise PartFailed(f"{what} failed to start: {exc} (logs in {self.log_dir})") from exc
        log.info("event=part_started part=%r ms=%.0f", what, (time.monotonic() - t) * 1000)

    def _prepare(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        check_not_running(self.data_dir)
        self._kill_leftovers()
        self._pid_file.write_text(str(os.getpid()))
        self._owns_pid = True
        wanted = {"engine": self.cfg.engine, "streamer": self.cfg.streamer, "console": self.cfg.console,
                  "rest": True, "ws": True}
        busy = []
        for part, port in list(self.ports.items()):
            if not wanted.get(part, True):
                continue
            if port == 0:
                self.ports[part] = free_port()
            elif port_open(port, self.cfg.host):
                busy.append(f"{part} port {port} (--{part}-port)")
        if busy:
            raise PortBusy("in use: " + ", ".join(busy) + "; stop what uses it or choose another port "
                           "(under make: make dev ARGS=\"--rest-port 0 ...\"; 0 = any free port)")
        self.say(f"supernoba local stack: data in {self.data_dir}, logs in {self.log_dir}")

    def _kill_leftovers(self) -> None:
        """End the processes a previous stack on this folder started and left behind (a crash,
        SIGKILL): two valkey-servers or kinesalites on one data folder would corrupt it.
        Only pids recorded in run/children.json whose command line is unchanged are touched."""
        record = self.run_dir / "children.json"
        if not record.exists():
            return
        try:
            children = json.loads(record.read_text())
        except ValueError:
            children = {}
        for name, entry in children.items():
            pid, cmdline = int(entry["pid"]), entry["cmdline"]
            try:
                current = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            except OSError:
                continue
            if current != cmdline:
                continue
            log.warning("event=leftover_killed part=%s pid=%d", name, pid)
            self.say(f"  ending {name} (pid {pid}) left behind by an earlier run")
            try:
                os.killpg(pid, signal.SIGTERM)
                for _ in range(100):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.05)
                else:
                    os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        record.unlink(missing_ok=True)

    def _record_children(self) -> None:
        procs: dict[str, Any] = {}
        if self.services is not None:
            procs.update({svc.name: svc.proc for svc in self.services.all})
        procs.update({name: child.proc for name, child in self.children.items()})
        out = {}
        for name, proc in procs.items():
            if proc is None or proc.poll() is not None:
                continue
            try:
                cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            except OSError:
                continue
            out[name] = {"pid": proc.pid, "cmdline": cmdline}
        (self.run_dir / "children.json").write_text(json.dumps(out, indent=1))

    def _start_services(self) -> None:
        self.services = LocalServices(data_dir=self.data_dir, log_dir=self.log_dir, ports=self.cfg.service_ports,
                                      valkey_cluster=self.cfg.valkey_cluster)
        try:
            self.services.start()
        finally:
            self._record_children()

    def _base_env(self) -> dict[str, str]:
        assert self.services is not None
        key_file = self.run_dir.parent / "admin_api_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(18))
            key_file.chmod(0o600)
        env = {
            **self.services.env(),
            ENV.WEBSOCKET_ENDPOINT: self.connections_url,
            ENV.ENGINE_HTTP_PORT: str(self.ports["engine"]),
            ENV.STREAMER_HTTP_PORT: str(self.ports["streamer"]),
            ENV.ENGINE_HTTP_HOST: self.cfg.host,  # --host: the listen address of every part
            ENV.STREAMER_HTTP_HOST: self.cfg.host,
            ENV.SUPERNOBA_STAGE: self.cfg.stage,
            ENV.ALLOW_TEST_MODE: "true",
            ENV.ADMIN_API_KEY: Settings.from_env().admin_api_key or key_file.read_text().strip(),
            ENV.LOG_LEVEL: self.cfg.log_level.upper(),
            ENV.SUPERNOBA_DATA_DIR: str(self.data_dir),
        }
        return env

    def _provision(self) -> None:
        from tools.provision import provision

        os.environ.update(self._base_env())
        for line in provision(Settings.from_env()):
            log.info("event=provision %s", line)

    def _load_app(self) -> None:
        self.app, self.chalice_config = load_app_and_config(self.cfg.stage)
        self.api_stage = self.chalice_config.api_gateway_stage or DEFAULT_API_STAGE
        # the stage's variables were applied on top of ours; the endpoint follows the stage name
        os.environ[ENV.WEBSOCKET_ENDPOINT] = self.connections_url
        self.env = {k: os.environ[k] for k in set(self._base_env()) | set(self.chalice_config.environment_variables)}
        self.env[ENV.WEBSOCKET_ENDPOINT] = self.connections_url
        self.admin_key = Settings.from_env().admin_api_key
        # Chalice gives its app logger a stdout handler, level ERROR (unless app.debug) and no
        # propagation; locally the app's records go to app.log / dev.log like everything else
        app_logger = logging.getLogger(self.app.app_name)
        for h in list(app_logger.handlers):
            app_logger.removeHandler(h)
        app_logger.propagate = True
        app_logger.setLevel(getattr(logging, self.cfg.log_level.upper(), logging.INFO))
        log.info("event=app_loaded stage=%s api_stage=%s routes=%d ws_handlers=%s sources=%s", self.cfg.stage,
                 self.api_stage, len(self.app.routes), sorted(self.app.websocket_handlers),
                 [s.name for s in self.app.event_sources])

    def _start_rest(self) -> None:
        from chalice.local import ChaliceRequestHandler, create_local_server

        rest_log = logging.getLogger("supernoba.rest")

        class _LoggedHandler(ChaliceRequestHandler):
            # chalice writes the headers and the body in two sends: with Nagle on, the body
            # waits for the client's delayed ACK, ~40 ms on every response
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                rest_log.info("client=%s %s", self.address_string(), format % args)

        server = create_local_server(self.app, self.chalice_config, self.cfg.host, self.ports["rest"])
        # socketserver listens with a backlog of 5; bursts of REST clients then see resets.
        server.server.socket.listen(REST_LISTEN_BACKLOG)
        server.server.RequestHandlerClass = functools.partial(_LoggedHandler, app_object=self.app,
                                                              config=self.chalice_config)
        self.rest = server
        self._rest_thread = threading.Thread(target=server.server.serve_forever, name="rest", daemon=True)
        self._rest_thread.start()

    def _start_gateway(self) -> None:
        from tools.gateway import Gateway

        self.gateway = Gateway(self.app, stage=self.api_stage, host=self.cfg.host, port=self.ports["ws"]).start()

    def _start_pump(self) -> None:
        from tools.pump import Pump

        self.pump = Pump(self.app, data_dir=self.data_dir, run_schedules=self.cfg.schedules).start()
        self.control = _ControlServer(self.cfg.host, self.pump)

    @property
    def control_url(self) -> str | None:
        return self.control.url if self.control is not None else None

    def _first_start(self) -> None:
        marker = self.run_dir.parent / "initialized"
        if marker.exists():
            self.say(f"    (not the first start: symbols kept from {self.data_dir})")
            return
        req = urllib.request.Request(
            f"{self.rest_url}/admin/symbols", data=json.dumps({"symbol": FIRST_SYMBOL}).encode(), method="POST",
            headers={"Content-Type": "application/json", "X-Admin-Key": self.admin_key},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
                log.info("event=symbol_activated symbol=%s status=%d", FIRST_SYMBOL, resp.status)
        except urllib.error.HTTPError as exc:
            raise PartFailed(f"POST /admin/symbols {FIRST_SYMBOL} answered {exc.code}: {exc.read()[:200]!r}") from exc
        marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def _start_child(self, name: str, cmd: list[str]) -> None:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        child = _ChildProcess(name, cmd, env, self.log_dir / f"{name}.log",
                              f"http://{self.cfg.host}:{self.ports[name]}/health")
        self.children[name] = child
        child.start()
        self._record_children()

    def _start_console(self) -> None:
        from tools.console.serve import serve

        self.console = serve(self.cfg.host, self.ports["console"], self.rest_url, self.ws_url, self.admin_key,
                             stage=self.cfg.stage)

    def _start_simulator(self) -> None:
        from tools.simulator import Simulator

        self.simulator = Simulator(self.rest_url, admin_key=self.admin_key).start()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.cfg.health_timeout
        while time.monotonic() < deadline:
            statuses = self.status()
            if all(s.healthy for s in statuses):
                return
            for name, child in self.children.items():
                if not child.alive():
                    raise PartFailed(f"{name} exited with code {child.proc.returncode if child.proc else '?'}; "
                                     f"see {child.log_path}")
            time.sleep(0.2)
        bad = ", ".join(f"{s.name} ({s.detail})" for s in self.status() if not s.healthy)
        self.say(f"  warning: not healthy after {self.cfg.health_timeout:.0f}s: {bad}")
        log.warning("event=unhealthy parts=%s", bad)

    # ----------------------------------------------------------------- status
    def status(self) -> list[PartStatus]:
        out: list[PartStatus] = []
        if self.services is not None:
            for svc in self.services.all:
                ok = svc.proc is not None and svc.proc.poll() is None and svc.ready()
                out.append(PartStatus(svc.name, svc.url, ok, "" if ok else "not answering"))
        if self.rest is not None:
            ok, detail = _http_ok(f"{self.rest_url}/health")
            out.append(PartStatus("rest", self.rest_url, ok, detail))
        if self.gateway is not None:
            ok, detail = _http_ok(f"http://{self.cfg.host}:{self.ports['ws']}/@local/health")
            out.append(PartStatus("websocket", self.ws_url, ok, detail))
            out.append(PartStatus("@connections", self.connections_url + "/@connections/{id}", ok, detail))
        if self.pump is not None:
            out.append(PartStatus("pump", ", ".join(self.pump.handler_names("kinesis") + self.pump.handler_names()),
                                  True, "in process"))
        for name, child in self.children.items():
            ok, detail = _http_ok(child.health_url) if child.alive() else (False, "not running")
            out.append(PartStatus(name, f"http://{self.cfg.host}:{self.ports[name]}", ok, detail))
        if self.console is not None:
            ok, detail = _http_ok(self.console_url)
            out.append(PartStatus("console", self.console_url, ok, detail))
        if self.simulator is not None:
            out.append(PartStatus("simulator", ", ".join(self.simulator.symbols), self.simulator.alive(),
                                  self.simulator.summary()))
        return out

    def status_table(self) -> str:
        rows = [("part", "url / port", "health")] + [
            (s.name, s.url, "healthy" if s.healthy else f"UNHEALTHY {s.detail}") for s in self.status()]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines = [f"  {a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
        lines.insert(1, "  " + "-" * (w0 + w1 + 12))
        lines += ["", f"  ADMIN_API_KEY={self.admin_key}", f"  console: {self.console_url if self.console else '-'}",
                  f"  logs:    {self.log_dir}",
                  "  try:     curl -X POST " + self.rest_url + "/orders -H 'X-Test-User: u1' "
                  "-H 'Content-Type: application/json' -d '{\"symbol\":\"TEST\",\"side\":\"BUY\",\"price\":100,\"quantity\":1}'",
                  f"  invoke:  make invoke NAME=trades_backup{self._invoke_args()}", "  stop:    Ctrl-C"]
        return "\n".join(lines)

    def _invoke_args(self) -> str:
        """The ARGS `make invoke` needs to find this stack (none for the default folder)."""
        if self.data_dir.resolve() == (Path.cwd() / DEFAULT_DATA_DIR).resolve():
            return ""
        return f' ARGS="--data-dir {self.data_dir}"'

    def _write_run_files(self) -> None:
        info = {
            "pid": os.getpid(),
            "env": self.env,
            "urls": {"rest": self.rest_url, "ws": self.ws_url, "connections": self.connections_url,
                     "control": self.control_url,
                     "console": self.console_url if self.console else None,
                     **{n: f"http://{self.cfg.host}:{self.ports[n]}" for n in self.children}},
            "ports": self.ports,
            "admin_api_key": self.admin_key,
            "status": [asdict(s) for s in self.status()],
        }
        for name in ("env.json", "stack.json"):
            tmp = self.run_dir / (name + ".tmp")
            tmp.write_text(json.dumps(info, indent=1))
            tmp.chmod(0o600)
            os.replace(tmp, self.run_dir / name)

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            for child in list(self.children.values()):
                pid = child.proc.pid if child.proc else None
                child.supervise()
                if child.proc is not None and child.proc.pid != pid:
                    self._record_children()

    # ----------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop every part that was started, last first; safe to call twice."""
        self._stop.set()
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.simulator is not None:
            steps.append(("simulator", self.simulator.stop))
        for name in reversed(list(self.children)):
            steps.append((name, self.children[name].stop))
        if self.console is not None:
            steps.append(("console", self.console.stop))
        if self.control is not None:
            steps.append(("control", self.control.stop))
        if self.pump is not None:
            steps.append(("pump", self.pump.stop))
        if self.gateway is not None:
            steps.append(("gateway", self.gateway.stop))
        if self.rest is not None:
            steps.append(("rest", self._stop_rest))
        if self.services is not None:
            steps.append(("services", self.services.stop))
        for name, fn in steps:
            try:
                fn()
            except Exception:  # keep stopping the rest; say which part misbehaved
                log.exception("event=stop_failed part=%s", name)
        self.simulator = self.console = self.control = self.pump = self.gateway = self.rest = self.services = None
        self.children = {}
        if self._owns_pid:  # a refused start (AlreadyRunning) leaves the running stack's files alone
            for name in ("env.json", "stack.json", "children.json"):
                (self.run_dir / name).unlink(missing_ok=True)
            self._pid_file.unlink(missing_ok=True)
            self._owns_pid = False

    def _stop_rest(self) -> None:
        self.rest.server.shutdown()
        self.rest.server.server_close()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------- as a child process
class DevProcess:
    """`python -m tools.dev` run as a child (the end-to-end test and the benchmark use it).

    Every port is a free one unless given; `start()` returns once `<data>/run/stack.json`
    says the stack is up, and `.info` holds its URLs, ports, admin key and environment.
    `stop()` sends SIGTERM, as Ctrl-C would, and returns the exit code.
    """

    def __init__(self, data_dir: Path, *extra_args: str, timeout: float = 120.0) -> None:
        self.data_dir = data_dir.resolve()
        self.args = [sys.executable, "-m", "tools.dev", "--data-dir", str(self.data_dir), "--quiet",
                     *(a for part in DEFAULT_PORTS for a in (f"--{part}-port", "0")), *extra_args]
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> DevProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.data_dir / "dev-stdout.txt", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self.args, cwd=str(REPO_ROOT), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        out.close()
        try:
            self._wait_up()
        except BaseException:
            # not up in time, or interrupted while waiting (Ctrl-C, a benchmark's SIGTERM): as
            # `with DevProcess(...)` never reached __exit__, the stack must be stopped here
            self.stop()
            raise
        return self

    def _wait_up(self) -> None:
        assert self.proc is not None
        stack_file = self.data_dir / "run" / "stack.json"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PartFailed(f"tools.dev exited with {self.proc.returncode}: {self.output()[-3000:]}")
            if stack_file.exists():
                try:
                    self.info = json.loads(stack_file.read_text())
                except ValueError:
                    time.sleep(0.05)
                    continue
                return
            time.sleep(0.1)
        raise PartFailed(f"the local stack was not up within {self.timeout}s: {self.output()[-3000:]}")

    def output(self) -> str:
        path = self.data_dir / "dev-stdout.txt"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 60.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def __enter__(self) -> DevProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.dev",
        description="Run the whole Supernoba exchange locally (what `make dev` runs). "
        "Ports are printed at start; 0 means any free port.",
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="data and logs folder (default .local)")
    p.add_argument("--reset", action="store_true", help="delete the data folder first (streams, tables, books)")
    p.add_argument("--host", default=LOCAL_HOST, help="listen address of every part (default %(default)s)")
    for part, port in DEFAULT_PORTS.items():
        p.add_argument(f"--{part}-port", type=int, default=port, help=f"{part} port (default {port})")
    for svc in ("valkey", "kinesis", "dynamodb", "s3"):
        p.add_argument(f"--{svc}-port", type=int, default=0, help=f"{svc} port (default: any free port)")
    p.add_argument("--stage", default="local", help="Chalice stage whose environment applies (default local)")
    p.add_argument("--valkey-cluster", action="store_true",
                   help="put both caches on a 3-primary cluster-mode Valkey (in memory: not kept across restarts)")
    p.add_argument("--simulate", action="store_true", help="also run the market simulator (tools/simulator.py)")
    p.add_argument("--no-engine", action="store_true", help="do not start the engine")
    p.add_argument("--no-streamer", action="store_true", help="do not start the streamer")
    p.add_argument("--no-console", action="store_true", help="do not serve the console")
    p.add_argument("--no-schedules", action="store_true", help="do not fire schedules by themselves (invoke works)")
    p.add_argument("--log-level", default="INFO", help="log level of the in-process parts (default INFO)")
    p.add_argument("--quiet", action="store_true", help="print only the status table")
    return p


def config_from_args(args: argparse.Namespace) -> DevConfig:
    return DevConfig(
        data_dir=args.data_dir,
        host=args.host,
        ports={part: getattr(args, f"{part}_port") for part in DEFAULT_PORTS},
        service_ports={svc: getattr(args, f"{svc}_port") for svc in ("valkey", "kinesis", "dynamodb", "s3")
                       if getattr(args, f"{svc}_port")},
        valkey_cluster=args.valkey_cluster,
        stage=args.stage,
        simulate=args.simulate,
        engine=not args.no_engine,
        streamer=not args.no_streamer,
        console=not args.no_console,
        schedules=not args.no_schedules,
        log_level=args.log_level,
        quiet=args.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    if args.reset and cfg.data_dir.exists():
        try:
            check_not_running(cfg.data_dir)  # never wipe the folder of a running stack
        except AlreadyRunning as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"deleting {cfg.data_dir.resolve()}", flush=True)
        shutil.rmtree(cfg.data_dir)
    setup_logging(cfg.data_dir.resolve() / "logs", cfg.log_level)
    stop = threading.Event()
    started = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if not started.is_set():
            raise KeyboardInterrupt  # during start: unwinds start(), which stops what it started
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stack = LocalStack(cfg)
    try:
        stack.start()
    except DevError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr, flush=True)
        return 130
    started.set()
    try:
        print("\n" + stack.status_table() + "\n", flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping ...", flush=True)
    finally:
        stack.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
