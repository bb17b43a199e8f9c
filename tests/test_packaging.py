"""`pip install` of the distribution installs the reusable app alone, with its dependencies."""
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)], check=True, cwd=out
    )
    (path,) = out.glob("django_calendar_sync-*.whl")
    return path


def test_wheel_holds_calendar_sync_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"calendar_sync"}
    assert "calendar_sync/migrations/0001_initial.py" in names
    assert "calendar_sync/testing/fake_google.py" in names
    assert "calendar_sync/py.typed" in names


def test_wheel_installs_into_a_clean_environment(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, cwd=tmp_path)
    probe = (
        "import importlib.util, calendar_sync, django, rest_framework, googleapiclient, celery, encrypted_fields, tzlocal.windows_tz\n"
        "import calendar_sync.testing  # the fakes ship with the app\n"
        "assert importlib.util.find_spec('bookings') is None\n"
        "assert importlib.util.find_spec('managehub') is None\n"
        "assert importlib.util.find_spec('tests') is None or 'site-packages' not in importlib.util.find_spec('tests').origin\n"
        "print(calendar_sync.__file__)"
    )
    result = subprocess.run([str(python), "-c", probe], check=True, cwd=tmp_path, capture_output=True, text=True)
    assert "site-packages" in result.stdout
