"""``python manage.py run_worker``: the Temporal worker and the decision outbox relay."""

from __future__ import annotations

import asyncio
import compileall
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from approvals.digest import ensure_digest_schedule
from config.tracing import setup_tracing
from monitoring.snapshot import ensure_snapshot_schedule
from workflows import client as temporal
from workflows.worker import build_worker, ensure_search_attributes, relay_outbox, serve_sdk_metrics

log = logging.getLogger("tollgate.worker")


class Command(BaseCommand):
    help = "Run the Temporal worker for approvals until SIGINT/SIGTERM, then shut down gracefully."

    def handle(self, *args: Any, **options: Any) -> None:
        # The sandbox imports the workflow modules afresh for every workflow it starts or brings back
        # from outside the cache: from source that took 7.2 ms each, from bytecode 0.11 ms, and where
        # PYTHONDONTWRITEBYTECODE is set (as on our CI machines) no bytecode is ever written.
        # compileall writes it anyway, and only for files newer than their .pyc.
        compileall.compile_dir(Path(__file__).resolve().parents[2], quiet=1)
        if settings.TOLLGATE_WORKER_METRICS:  # before any client connects: they take the runtime then
            serve_sdk_metrics(settings.TOLLGATE_WORKER_METRICS)
            log.info("Temporal SDK metrics on http://%s/metrics", settings.TOLLGATE_WORKER_METRICS)
        if setup_tracing(default_service="tollgate-worker", instrument_django=False):
            log.info("tracing on (OpenTelemetry, from the OTEL_* settings)")
        asyncio.run(self.main())

    async def main(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        relay = asyncio.create_task(relay_outbox(stop))
        delay = 1.0
        with ThreadPoolExecutor(max_workers=settings.TOLLGATE_WORKER_THREADS) as executor:
            while not stop.is_set():
                try:
                    client = await temporal.connect()
                except temporal.TemporalUnavailable as exc:
                    log.warning("%s; retrying in %.0fs", exc, delay)
                    await _sleep_or_stop(stop, delay)
                    delay = min(delay * 2, 30)
                    continue
                delay = 1.0
                try:
                    await ensure_snapshot_schedule(client)
                except Exception:  # monitoring must never keep approvals from running
                    log.exception("could not create the monitoring snapshot schedule")
                try:
                    await ensure_digest_schedule(client)
                except Exception:  # nor must the digest
                    log.exception("could not create the mail digest schedule")
                try:
                    search_attributes = await ensure_search_attributes(client)
                except Exception:  # never keep approvals from running: they run without them
                    log.exception("could not check the namespace's search attributes")
                    search_attributes = False
                worker = build_worker(client, executor, search_attributes=search_attributes)
                log.info(
                    "worker polling task queue %r on %s namespace %r",
                    settings.TEMPORAL_TASK_QUEUE,
                    settings.TEMPORAL_ADDRESS,
                    settings.TEMPORAL_NAMESPACE,
                )
                running = asyncio.create_task(worker.run())
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    log.info("shutting down: finishing in-flight activities (up to 10s)")
                    await worker.shutdown()
                    break
                stopped.cancel()
                failure = running.exception()
                log.error("worker stopped unexpectedly (%s); restarting", failure)
                await _sleep_or_stop(stop, delay)
        await relay
        log.info("worker stopped")


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
