"""`pip install` of the distribution installs the reusable app alone, with its dependencies; the host's
runtime requirements hold no test tool; and the documented integration works in a fresh project."""

import ast
import email
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import calendar_sync

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: Tools used only by tests, benchmarks, lint, docs or packaging: never in requirements.txt.
DEV_TOOLS = {
    "pytest", "pytest-django", "pytest-xdist", "pytest-cov", "coverage", "schemathesis", "hypothesis", "hypothesis-graphql",
    "playwright", "responses", "ruff", "mypy", "mkdocs", "build", "twine", "nox", "tox", "werkzeug",
}  # fmt: skip
#: Imported only when present (psycopg: PostgreSQL's one-round-trip path).
OPTIONAL_IMPORTS = {"psycopg"}


def name(requirement):
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def requirements(path):
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """`python -m build`: the sdist and the wheel, as a release would make them."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=True, cwd=out, capture_output=True
    )
    return out


@pytest.fixture(scope="module")
def wheel(dist):
    (path,) = dist.glob("django_calendar_sync-*.whl")
    return path


def test_wheel_holds_calendar_sync_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"calendar_sync"}
    assert "calendar_sync/migrations/0001_initial.py" in names
    assert "calendar_sync/testing/fake_google.py" in names
    assert "calendar_sync/py.typed" in names


def test_twine_check_passes(dist):
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_metadata_carries_version_licence_urls_and_a_changelog_entry(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(path))
        assert any(n.endswith("licenses/LICENSE") for n in archive.namelist())
    assert metadata["Version"] == calendar_sync.__version__
    assert metadata["License-Expression"] == "MIT"
    assert {url.split(",")[0] for url in metadata.get_all("Project-URL")} >= {
        "Homepage",
        "Documentation",
        "Repository",
        "Changelog",
    }
    assert "Framework :: Django" in metadata.get_all("Classifier")
    assert f"## [{calendar_sync.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_every_runtime_import_of_the_app_is_declared():
    declared = {name(r) for r in PYPROJECT["project"]["dependencies"]}
    modules = set()
    for path in (ROOT / "calendar_sync").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                modules.add(node.module.split(".")[0])
    distributions = importlib.metadata.packages_distributions()
    third_party = {m for m in modules - set(sys.stdlib_module_names) - {"calendar_sync"} - OPTIONAL_IMPORTS}
    undeclared = {
        m: distributions.get(m) for m in third_party if not {name(d) for d in distributions.get(m, [m])} & declared
    }
    assert undeclared == {}
    assert "drf-spectacular" in declared  # the views' OpenAPI description is imported at runtime


def test_runtime_requirements_hold_no_test_tool():
    runtime = {name(r) for r in requirements(ROOT / "requirements.txt")}
    assert runtime & DEV_TOOLS == set()
    assert {name(r) for r in PYPROJECT["project"]["dependencies"]} <= runtime  # the host runs the app
    assert {"gunicorn", "psycopg", "redis", "django-environ"} <= runtime
    dev = requirements(ROOT / "requirements-dev.txt")
    assert dev[0] == "-r requirements.txt"
    assert {"pytest", "pytest-django", "schemathesis", "playwright", "ruff", "mypy", "mkdocs"} <= {
        name(r) for r in dev[1:]
    }
    assert all("==" in r for r in dev[1:] + requirements(ROOT / "requirements.txt")), "pinned"


PROBE = (
    "import importlib.util, calendar_sync, django, rest_framework, googleapiclient, celery, encrypted_fields, tzlocal.windows_tz\n"
    "import calendar_sync.testing  # the fakes ship with the app\n"
    "assert importlib.util.find_spec('bookings') is None\n"
    "assert importlib.util.find_spec('managehub') is None\n"
    "assert importlib.util.find_spec('tests') is None or 'site-packages' not in importlib.util.find_spec('tests').origin\n"
    "print(calendar_sync.__file__)"
)


def test_the_unpacked_wheel_imports_beside_its_dependencies_alone(wheel, tmp_path):
    """The quick form of the clean install below: the wheel's files, unpacked beside the installed
    dependencies but away from the source tree, import the app and its fakes and nothing of the host;
    and the wheel requires what pyproject.toml declares (which the import scan above checks)."""
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
        (path,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(path))
    assert {name(r) for r in metadata.get_all("Requires-Dist")} >= {
        name(r) for r in PYPROJECT["project"]["dependencies"]
    }
    site_packages = [p for p in sys.path if p.endswith("site-packages")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTHON"))}
    env["PYTHONPATH"] = os.pathsep.join([str(unpacked), *site_packages])
    # -S: no site hooks, so only these paths count; the working directory is the empty tmp_path.
    result = subprocess.run(
        [sys.executable, "-S", "-c", PROBE], check=True, cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.stdout.strip() == str(unpacked / "calendar_sync" / "__init__.py")


@pytest.mark.slow
def test_wheel_installs_into_a_clean_environment(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, cwd=tmp_path)
    result = subprocess.run([str(python), "-c", PROBE], check=True, cwd=tmp_path, capture_output=True, text=True)
    assert "site-packages" in result.stdout


@pytest.mark.slow
def test_the_example_integrates_into_a_fresh_startproject(wheel, tmp_path):
    """The integration guide, literally: the wheel in a fresh virtualenv, `django-admin startproject`, the
    example's app and settings, then check, migrate and test (create → event, cancel → gone, anonymous → 401)
    with the fake Google and DRF left at its default AllowAny."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "PYTHON"))}
    env = {**clean, "PATH": f"{bin_dir}{os.pathsep}{clean.get('PATH', '')}", "VIRTUAL_ENV": str(env_dir)}

    def run(*args, cwd=tmp_path):
        result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    run(bin_dir / "python", "-m", "pip", "install", "-q", wheel)
    run(bin_dir / "django-admin", "startproject", "mysite")
    project = tmp_path / "mysite"
    shutil.copytree(EXAMPLE / "appointments", project / "appointments", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(EXAMPLE / "celery.py", project / "mysite" / "celery.py")
    with open(project / "mysite" / "settings.py", "a") as settings:
        settings.write("\n" + (EXAMPLE / "settings_addition.py").read_text())
    with open(project / "mysite" / "urls.py", "a") as urls:
        urls.write("\n" + (EXAMPLE / "urls_addition.py").read_text())
    python = bin_dir / "python"
    assert "REST_FRAMEWORK" not in (project / "mysite" / "settings.py").read_text()  # DRF's defaults: AllowAny

    run(python, "manage.py", "makemigrations", "appointments", cwd=project)
    checked = run(python, "manage.py", "check", cwd=project)
    assert "ERRORS" not in checked and "calendar_sync.E" not in checked
    run(python, "manage.py", "migrate", cwd=project)
    tested = run(python, "manage.py", "test", "-v", "2", cwd=project)  # Django's runner: DEBUG off, system checks on
    assert "Ran 2 tests" in tested and "\nOK" in tested
    assert "test_create_then_cancel" in tested and "test_every_member_endpoint_answers_401" in tested
    beat = run(
        python,
        "-c",
        "import django, mysite.celery as c; django.setup(); print(sorted(e['task'] for e in c.app.conf.beat_schedule.values()))",
        cwd=project,
    )
    assert "calendar_sync.tasks.renew_push" in beat and "calendar_sync.tasks.sweep" in beat
