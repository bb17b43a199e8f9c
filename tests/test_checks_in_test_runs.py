"""The app's checks pass in any project's test run (Django's runner: DEBUG off, checks on) with the
startproject key and loopback fakes; key strength and loopback http with DEBUG off are deploy checks."""
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from calendar_sync.checks import check_settings


def test_a_test_run_with_the_startproject_key_and_a_loopback_fake_passes_the_checks(fake_google, settings):
    settings.DEBUG = False  # as Django's test runner sets it
    settings.SECRET_KEY = "django-insecure-" + "x" * 50
    call_command("check")
    with pytest.raises(SystemCheckError) as raised:
        call_command("check", deploy=True, fail_level="ERROR")
    assert "calendar_sync.E005" in str(raised.value) and "calendar_sync.E002" in str(raised.value)


def test_the_missing_setting_hint_names_the_setting_not_our_env_file(settings):
    settings.CALENDAR_SYNC = {"SOURCES": settings.CALENDAR_SYNC["SOURCES"]}
    hints = [e.hint for e in check_settings(None) if e.id == "calendar_sync.W001" and "GOOGLE_CLIENT_ID" in e.msg]
    assert hints and all('CALENDAR_SYNC["GOOGLE_CLIENT_ID"]' in h and ".env" not in h for h in hints)


def test_a_provider_left_out_on_purpose_is_not_warned_about(fake_google, settings):
    """Google configured, Microsoft's keys all empty: Microsoft is simply not offered (no W001 for it);
    a half-configured provider is still named."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_CLIENT_ID": "", "MICROSOFT_CLIENT_SECRET": "", "MICROSOFT_REDIRECT_URI": ""}
    assert not [e for e in check_settings(None) if e.id == "calendar_sync.W001"]
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_CLIENT_ID": "an-id"}
    assert {e.msg.split('"')[1] for e in check_settings(None) if e.id == "calendar_sync.W001"} == {"MICROSOFT_CLIENT_SECRET", "MICROSOFT_REDIRECT_URI"}
