"""The app's checks pass in any project's test run (Django's runner: DEBUG off, checks on) with the
startproject key and loopback fakes; key strength and loopback http with DEBUG off are deploy checks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from calendar_sync.checks import check_settings

ROOT = Path(__file__).resolve().parent.parent


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
    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        "MICROSOFT_CLIENT_ID": "",
        "MICROSOFT_CLIENT_SECRET": "",
        "MICROSOFT_REDIRECT_URI": "",
    }
    assert not [e for e in check_settings(None) if e.id == "calendar_sync.W001"]
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_CLIENT_ID": "an-id"}
    assert {e.msg.split('"')[1] for e in check_settings(None) if e.id == "calendar_sync.W001"} == {
        "MICROSOFT_CLIENT_SECRET",
        "MICROSOFT_REDIRECT_URI",
    }


@pytest.mark.django_db
def test_development_keys_fail_the_deploy_checks_outside_debug(settings):
    settings.DEBUG = False
    call_command("check")  # a test run's checks leave the host's keys to the deploy checks
    with pytest.raises(SystemCheckError, match="SECRET_KEY"):
        call_command("check", deploy=True, fail_level="ERROR")
    settings.SECRET_KEY = "a-real-production-secret-key-" + "x" * 40
    with pytest.raises(SystemCheckError, match="SALT_KEY"):
        call_command("check", deploy=True, fail_level="ERROR")
    settings.SALT_KEY = ["a-real-production-salt"]
    call_command("check", deploy=True, fail_level="ERROR")


@pytest.mark.django_db
@pytest.mark.parametrize("env", [{"DEBUG": "false"}, {"DEBUG": "false", "SECRET_KEY": "", "SALT_KEY": ""}])
def test_wsgi_refuses_to_serve_on_development_keys(env):
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SALT_KEY", "DEBUG")}
    result = subprocess.run(
        [sys.executable, "-c", "import managehub.wsgi"], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
