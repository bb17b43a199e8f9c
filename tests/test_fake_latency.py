"""The fakes' latency knob: every request answered that late, from the constructor, at runtime and
from the sandbox's FAKE_LATENCY_MS, with concurrent requests waiting side by side (a thread each)."""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from calendar_sync.testing import FakeGoogle, FakeMicrosoft


def timed_get(url):
    started = time.monotonic()
    requests.get(url, timeout=10).raise_for_status()
    return time.monotonic() - started


@pytest.mark.parametrize("fake_class", [FakeGoogle, FakeMicrosoft])
def test_latency_from_the_constructor_at_runtime_and_after_reset(fake_class):
    with fake_class(latency=0.2) as fake:
        assert timed_get(fake.url) >= 0.2
        fake.latency = 0
        assert timed_get(fake.url) < 0.2
        fake.reset()  # back to the constructor's
        assert fake.latency == 0.2 and timed_get(fake.url) >= 0.2


@pytest.mark.parametrize("fake_class", [FakeGoogle, FakeMicrosoft])
def test_waiting_requests_overlap(fake_class):
    """Eight callers at 300 ms each are answered together, as by a real service, not one after another."""
    with fake_class(latency=0.3) as fake, ThreadPoolExecutor(8) as pool:
        started = time.monotonic()
        waits = list(pool.map(timed_get, [fake.url] * 8))
        elapsed = time.monotonic() - started
    assert min(waits) >= 0.3
    # One after another could not take less than 8 x 0.3 = 2.4 s; together they take about 0.3 s plus
    # whatever a loaded machine adds to starting eight threads (the bound is that, not a timing budget).
    assert elapsed < 2.0, elapsed


def test_sandbox_takes_its_latency_from_the_environment():
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "calendar_sync.testing", "--port", "0", "--microsoft-port", "0"],
        env={**os.environ, "FAKE_LATENCY_MS": "250"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        env = json.loads(sandbox.stdout.readline())
        assert timed_get(env["GOOGLE_API_ROOT"]) >= 0.25
        assert timed_get(env["MICROSOFT_LOGIN_ROOT"]) >= 0.25
    finally:
        sandbox.terminate()
        sandbox.wait(10)
