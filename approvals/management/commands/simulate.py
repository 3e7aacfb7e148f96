"""``python manage.py simulate``: a realistic load for demos and benchmarks (approvals.simulation)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

from approvals.simulation import Config, Simulation, SimulationError, Stats

DEFAULTS = Config()


def _span(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        span = (float(low), float(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX in seconds, e.g. 5:60, got {text!r}") from None
    if not 0 <= span[0] <= span[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX, got {text!r}")
    return span


def _plain(text: str) -> str:
    return text


def _quiet_temporal_core() -> None:
    """While Temporal is away the SDK's core retries every call and logs each retry as a
    warning; the command says it once instead. Only when this process has no runtime yet
    (a worker in the same process, as in tests, keeps its own)."""
    quiet = LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
    try:
        Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=quiet)))
    except RuntimeError:
        pass


class Command(BaseCommand):
    help = (
        "Start a realistic mix of workflows (approval requests, orders, team budgets, deployments) and let "
        "the demo cast decide the approvals through the same services as the web pages. Needs a worker "
        "(make run, or manage.py run_worker). Ctrl-C stops with a summary."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        counts = parser.add_argument_group("how many of each")
        counts.add_argument(
            "--approvals",
            type=int,
            default=DEFAULTS.approvals,
            help="approval requests made through the request form's service (default %(default)s)",
        )
        counts.add_argument(
            "--orders",
            type=int,
            default=DEFAULTS.orders,
            help="OrderSagaWorkflow runs, 40%% above the approval threshold (default %(default)s)",
        )
        counts.add_argument(
            "--budgets",
            type=int,
            default=DEFAULTS.budgets,
            help="TeamBudgetWorkflow entities, each sent 3 spends, one above its limit "
            "(default %(default)s); they keep running",
        )
        counts.add_argument(
            "--deployments",
            type=int,
            default=DEFAULTS.deployments,
            help="DeploymentPipelineWorkflow runs (default %(default)s)",
        )
        pace = parser.add_argument_group("pace")
        pace.add_argument(
            "--rate", type=float, default=DEFAULTS.rate, help="workflow starts per second (default %(default)s)"
        )
        pace.add_argument(
            "--duration",
            type=float,
            default=DEFAULTS.duration,
            help="seconds the simulated approvers keep deciding; the command ends earlier once "
            "everything it started has closed; 0: start everything and exit "
            "(default %(default)s)",
        )
        pace.add_argument(
            "--decide-after",
            type=_span,
            default=DEFAULTS.decide_after,
            metavar="MIN:MAX",
            help="random delay in seconds before an approver decides a task (default 5:60)",
        )
        mix = parser.add_argument_group("mix")
        mix.add_argument(
            "--reject-rate",
            type=float,
            default=DEFAULTS.reject_rate,
            help="share of decided approvals that are rejected (default %(default)s)",
        )
        mix.add_argument(
            "--timeout-rate",
            type=float,
            default=DEFAULTS.timeout_rate,
            help="share of approval requests nobody decides, on a short policy this command creates "
            "(they escalate, then expire), and of deployments given an execution timeout "
            "shorter than their approval wait (default %(default)s)",
        )
        mix.add_argument(
            "--timeout-after",
            type=int,
            default=DEFAULTS.timeout_after,
            metavar="SECONDS",
            help="each level of that short policy, and the execution timeout of those deployments "
            "(default %(default)s)",
        )
        mix.add_argument(
            "--fail-rate",
            type=float,
            default=DEFAULTS.fail_rate,
            help="share of deployments whose artifact is invalid (they fail at verify, without "
            "retries); the others fail their build 1-3 times first (default %(default)s)",
        )
        mix.add_argument(
            "--seed",
            type=int,
            default=None,
            help="seed for the mix, verdicts and delays (default: random, printed in the summary)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = Config(
            approvals=options["approvals"],
            orders=options["orders"],
            budgets=options["budgets"],
            deployments=options["deployments"],
            rate=options["rate"],
            duration=options["duration"],
            decide_after=options["decide_after"],
            reject_rate=options["reject_rate"],
            timeout_rate=options["timeout_rate"],
            timeout_after=options["timeout_after"],
            fail_rate=options["fail_rate"],
            seed=options["seed"],
        )
        problems = config.problems()
        if problems:
            raise CommandError("; ".join(problems))
        _quiet_temporal_core()
        tty = self.stderr.isatty()
        self._width = 0
        self._tty = tty
        simulation = Simulation(config, on_progress=self._progress, progress_every=0.5 if tty else 5.0)
        try:
            stats = asyncio.run(self._run(simulation))
        except SimulationError as exc:
            self._end_progress()
            if simulation.stats.started:
                self._summary(simulation.stats)
            raise CommandError(str(exc)) from None
        self._end_progress()
        self._summary(stats)
        if stats.interrupted:
            raise SystemExit(130)  # the shell's convention for "stopped by Ctrl-C"

    async def _run(self, simulation: Simulation) -> Stats:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, simulation.stop)
            except (RuntimeError, ValueError):  # not the main thread (called from a test or a script)
                pass
        return await simulation.run()

    def _progress(self, stats: Stats) -> None:
        line = stats.line()
        if self._tty:
            # One line, rewritten in place; padded over a longer previous one.
            self.stderr.write("\r" + line.ljust(self._width), style_func=_plain, ending="")
            self._width = len(line)
            self.stderr.flush()
        else:
            self.stderr.write(line, style_func=_plain)

    def _end_progress(self) -> None:
        if self._tty and self._width:
            self.stderr.write("", style_func=_plain)
            self._width = 0

    def _summary(self, stats: Stats) -> None:
        for line in stats.summary():
            self.stdout.write(line)
