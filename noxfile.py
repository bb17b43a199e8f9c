"""The supported matrix: every Django release × Python × database the app is tested on.

    nox -l                                  # the sessions: tests(python='…', django='…', database='…')
    nox -s "tests(python='3.13', django='6.1', database='mariadb')"
    nox -k "mariadb and 6.1"                # a slice of the matrix

Each session runs the focused subset (the sync, its per-object lock, OAuth, and the real-worker
battery of test_reliability.py) on its database with a Redis broker; the full suite runs on
Django 5.2 / Python 3.11 / PostgreSQL (`python3 dev.py test`, and CI). Databases and the broker
come from the environment (defaults: this machine's services):

    NOX_POSTGRES_URL  postgres://postgres@127.0.0.1:5432/managehub_nox
    NOX_MARIADB_URL   mysql://root@127.0.0.1:3306/managehub_nox   (the test database is test_<name>)
    NOX_BROKER_URL    redis://127.0.0.1:6379/13
    NOX_ENVDIR        where the virtualenvs live (default .nox); they are reused, and reinstalled
                      only when the requirements change

MariaDB/MySQL is driven by mysqlclient, the driver Django recommends; it compiles against the
MariaDB client library: `apt-get install libmariadb-dev pkg-config` (Debian) first.
"""

import glob
import hashlib
import os
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
# pyenv's interpreters, found without `pyenv global` listing them all
os.environ["PATH"] = os.pathsep.join(
    [*sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[1-9]*/bin"))), os.environ["PATH"]]
)

nox.options.envdir = os.environ.get("NOX_ENVDIR", str(ROOT / ".nox"))
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

# Django release -> the Pythons it is tested on (6.x needs Python >= 3.12).
DJANGO = {"5.2": ["3.11", "3.12"], "6.0": ["3.12", "3.13"], "6.1": ["3.12", "3.13"]}
DATABASES = {
    "postgresql": os.environ.get("NOX_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/managehub_nox"),
    "mariadb": os.environ.get("NOX_MARIADB_URL", "mysql://root@127.0.0.1:3306/managehub_nox"),
    "sqlite": f"sqlite:///{tempfile.gettempdir()}/managehub-nox.sqlite3",  # the tests' database: a file per run (settings)
}
MYSQLCLIENT = "mysqlclient==2.3.2"
# The focused subset: the sync and its lock, OAuth, and a real worker (skipped on SQLite).
TESTS = [
    "tests/test_sync.py",
    "tests/test_sync_statements.py",
    "tests/test_object_lock.py",
    "tests/test_oauth.py",
    "tests/test_reliability.py",
]
# What the subset does not need from the development requirements (browser, schema fuzzing, linters, docs, packaging, nox itself).
NOT_NEEDED = {
    "playwright",
    "greenlet",
    "schemathesis",
    "mypy",
    "mypy_extensions",
    "librt",
    "ruff",
    "ast_serialize",
    "pathspec",
    "nox",
    "argcomplete",
    "colorlog",
    "dependency-groups",
    "distlib",
    "filelock",
    "humanize",
    "platformdirs",
    "python-discovery",
    "virtualenv",
    "import-linter",
    "grimp",
    "mkdocs",
    "mkdocs-get-deps",
    "build",
    "twine",
}

# CI runs one Python per Django release on every database (`nox -t ci`): 9 sessions; the full suite
# covers Django 5.2 on Python 3.11 and PostgreSQL. `nox` alone runs all 18.
CI = {("3.12", "5.2"), ("3.12", "6.0"), ("3.13", "6.1")}
MATRIX = [
    nox.param(python, django, database, tags=["ci"] if (python, django) in CI else [])
    for django, pythons in DJANGO.items()
    for python in pythons
    for database in DATABASES
]


def _requirements(django, database):
    """The host's runtime and test pins (requirements.txt, requirements-dev.txt) with Django replaced by the release under test."""
    pins = []
    for line in [
        *(ROOT / "requirements.txt").read_text().splitlines(),
        *(ROOT / "requirements-dev.txt").read_text().splitlines(),
    ]:
        name = line.split("==")[0].strip()
        if not name or name.startswith(("#", "-")) or name in NOT_NEEDED:
            continue
        pins.append(f"Django~={django}.0" if name.lower() == "django" else line.strip())
    return pins + ([MYSQLCLIENT] if database == "mariadb" else [])


def _install(session, pins):
    """Install `pins` unless this virtualenv already has exactly them (a reused venv costs no pip run)."""
    stamp = Path(session.virtualenv.location) / ".managehub-requirements"
    digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    session.install(*pins)
    stamp.write_text(digest)


@nox.session
@nox.parametrize("python,django,database", MATRIX)
def tests(session, django, database):
    """The focused subset on one Django release and one database, a Redis worker beside it."""
    _install(session, _requirements(django, database))
    env = {
        "CELERY_BROKER_URL": os.environ.get("NOX_BROKER_URL", "redis://127.0.0.1:6379/13"),
        "DATABASE_URL": DATABASES[database],
    }
    # A real worker needs a database server (SQLite's test database lives in one process's file).
    args = session.posargs or [*TESTS, *(["-m", "not worker"] if database == "sqlite" else [])]
    session.run("python", "-c", "import django; print('Django', django.get_version())")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, env=env)
