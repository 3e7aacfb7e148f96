"""What an approval campaign costs its parent's history, on a dev server with the real worker.

    .venv/bin/python bench/campaign_bench.py [--approvers 1000] [--limit 1000] [--payload-bytes 1000]

Starts a Temporal dev server (in a temporary directory), a SQLite database with that many users,
and the real worker; starts one ``ApprovalCampaignWorkflow`` whose approvers are all of them,
waits until every approval task is registered, cancels the campaign (so every child ends, as
cancelled), and prints the root workflow's history: events, bytes, and how much of it the child
starts take. With ``--limit`` below the number of approvers, the root only starts sub-campaigns.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

from bench.common import free_port  # noqa: E402


async def run(address: str, approvers: int, limit: int, payload_bytes: int) -> None:
    from asgiref.sync import sync_to_async
    from temporalio.client import Client

    from approvals.models import ApprovalTask
    from workflows.worker import build_worker

    client = await Client.connect(address)
    names = [f"user{n:05d}" for n in range(approvers)]
    campaign_id = f"bench{time.monotonic_ns() % 10**8}"
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(client, executor, task_queue="approvals"):
            handle = await client.start_workflow(
                "ApprovalCampaignWorkflow",
                {"campaign_id": campaign_id, "title": "Bench", "requested_by": "alice", "approvers": names,
                 "fan_out_limit": limit, "payload": {"text": "x" * payload_bytes}},
                id=f"campaign-{campaign_id}", task_queue="approvals",
            )  # fmt: skip
            count = sync_to_async(ApprovalTask.objects.filter(status="pending").count)
            while (registered := await count()) < approvers:
                print(f"  {registered} of {approvers} tasks registered ({time.monotonic() - began:.0f} s)", flush=True)
                await asyncio.sleep(5)
            print(f"all {approvers} tasks registered after {time.monotonic() - began:.0f} s; cancelling", flush=True)
            await handle.cancel()
            result = await handle.result()
    history = await handle.fetch_history()
    total = sum(event.ByteSize() for event in history.events)
    starts = [e for e in history.events if e.HasField("start_child_workflow_execution_initiated_event_attributes")]
    ends = [e for e in history.events if e.HasField("child_workflow_execution_completed_event_attributes")]
    print(f"\nroot campaign, {approvers} approvers, fan_out_limit {limit}, payload {payload_bytes} bytes:")
    print(f"  outcome: {result['status']}, counts {result['counts']}")
    print(f"  history: {len(history.events)} events, {total / 1e6:.2f} MB")
    print(f"  children started: {len(starts)}, {sum(e.ByteSize() for e in starts) / 1e6:.2f} MB of start events")
    print(f"  children completed: {len(ends)}, {sum(e.ByteSize() for e in ends) / 1e6:.2f} MB of completion events")
    print(f"  wall time: {time.monotonic() - began:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--approvers", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--payload-bytes", type=int, default=1000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tollgate-campaign-bench-"))
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "temporal"), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port),
         "--db-filename", str(workdir / "temporal.db"), "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        os.environ.update({
            "TOLLGATE_VAR_DIR": str(workdir), "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
            "DJANGO_SETTINGS_MODULE": "config.settings", "TOLLGATE_LOG_LEVEL": "WARNING",
            "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        })  # fmt: skip
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from approvals.demo import seed_users_and_policies

        call_command("migrate", verbosity=0)
        seed_users_and_policies()
        User = get_user_model()
        User.objects.bulk_create(User(username=f"user{n:05d}") for n in range(args.approvers))
        time.sleep(3)  # the dev server's first start
        asyncio.run(run(f"127.0.0.1:{port}", args.approvers, args.limit, args.payload_bytes))
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
