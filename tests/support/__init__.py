"""Helpers the tests share; fixtures stay in the conftest.py files and test modules import only from here.

- ``markers``: which test is running, so a helper that starts a slow server can insist on its marker.
- ``data``: the tests' own cast, policies and pending tasks (never the demo seed).
- ``temporal``: Temporal servers (dev and time-skipping), the worker thread, the ``temporal`` CLI,
  workflow helpers and history recording.
- ``web``: log-in helpers for the test client and the browser, the ASGI (daphne) server.
- ``stack``: ``make run`` as a subprocess.
- ``sample_workflows``: the monitoring tests' small workflows with known outcomes.
"""
