"""Test helpers for integrators: a fake Google (OAuth + Calendar v3) on 127.0.0.1.

    from calendar_sync.testing import FakeGoogle
    with FakeGoogle() as google, override_settings(CALENDAR_SYNC={**settings.CALENDAR_SYNC, **google.settings()}):
        ...

Run it on its own with `python -m calendar_sync.testing --port 8765`.
"""
from .fake_google import FakeGoogle

__all__ = ["FakeGoogle"]
