"""Test helpers for integrators: a fake Google (OAuth + Calendar v3) and a fake Microsoft
(identity platform v2.0 + Graph v1.0), each a real HTTP server on 127.0.0.1.

    from calendar_sync.testing import FakeGoogle, FakeMicrosoft
    with FakeGoogle() as google, override_settings(DEBUG=True, CALENDAR_SYNC={**settings.CALENDAR_SYNC, **google.settings()}):
        ...

Plain http to loopback is accepted for connecting only with DEBUG on (calls with an existing
grant accept it always). Run both for a sandbox with `python -m calendar_sync.testing`.
"""
from .fake_google import FakeGoogle
from .fake_microsoft import FakeMicrosoft

__all__ = ["FakeGoogle", "FakeMicrosoft"]
