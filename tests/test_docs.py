"""The docs site builds with warnings as errors, names every CALENDAR_SYNC key the code reads, and shows
the example's files as they are (so the integration guide is the code CI runs)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from calendar_sync import conf
from calendar_sync.providers import provider_classes

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
READS = re.compile(
    r"""(?:get_setting|\.setting)\(\s*["']([A-Z][A-Z0-9_]*)["']|CALENDAR_SYNC\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
)


def keys_the_code_reads():
    found = set(conf.DEFAULTS).union(
        *(cls.settings for cls in provider_classes())
    )  # the app's keys and every provider's own
    for path in (ROOT / "calendar_sync").rglob("*.py"):
        if "testing" not in path.parts:
            found.update(a or b for a, b in READS.findall(path.read_text()))
    return found


def test_every_setting_is_in_the_settings_reference():
    reference = (DOCS / "settings.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", reference, re.M))
    keys = keys_the_code_reads()
    assert {"SYNC_MODE", "SOURCES", "GOOGLE_API_ROOT", "MICROSOFT_GRAPH_ROOT"} <= keys
    assert sorted(keys - documented) == []


@pytest.mark.parametrize(
    "page, files",
    [
        (
            "integration.md",
            [
                "settings_addition.py",
                "urls_addition.py",
                "appointments/models.py",
                "appointments/calendar.py",
                "celery.py",
            ],
        ),
        ("testing.md", ["appointments/tests.py"]),
    ],
)
def test_the_guide_shows_the_example_files_verbatim(page, files):
    text = (DOCS / page).read_text()
    for name in files:
        assert (ROOT / "example" / name).read_text().strip() in text, (
            f"docs/{page} no longer shows example/{name} as it is"
        )


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "settings" / "index.html").exists()
