#!/usr/bin/env python3
"""The two set-up commands: `python3 dev.py serve` and `python3 dev.py test`.

Each creates `.venv` (once, or again when requirements.txt or requirements-dev.txt changes),
installs the pinned development requirements into it (the host's runtime plus the test, lint and
docs tools), and then runs inside it — so a fresh clone needs only Python 3.11+.
"""

import base64
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".requirements.sha256"
REQUIREMENTS = ("requirements.txt", "requirements-dev.txt")  # the second includes the first
#: The sandbox's CalDAV account (Radicale on loopback): what a newcomer types to try iCloud-style connecting.
SANDBOX_CALDAV_USER = SANDBOX_CALDAV_PASSWORD = "sandbox"


def ensure_venv():
    digest = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in REQUIREMENTS)).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and PY.exists():
        return
    if not PY.exists():
        print("Creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("Installing pinned requirements ...", flush=True)
    subprocess.check_call([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    subprocess.check_call([str(PY), "-m", "pip", "install", "-q", "-r", str(ROOT / REQUIREMENTS[-1])])
    STAMP.write_text(digest)


def manage(*args):
    subprocess.check_call([str(PY), str(ROOT / "manage.py"), *args], cwd=ROOT)


def configured(name):
    """Whether the environment variable `name` is set, in the environment or in `.env`."""
    if os.environ.get(name):
        return True
    env_file = ROOT / ".env"
    return env_file.exists() and any(
        line.split("=", 1)[0].strip() == name and line.split("=", 1)[1].strip()
        for line in env_file.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )


def start_caldav_sandbox(port, storage=ROOT / ".sandbox" / "radicale"):
    """A real CalDAV server for the sandbox: Radicale on loopback, one account (`sandbox` / `sandbox`)
    with one calendar, kept in `.sandbox/radicale`. Loopback addresses are allowed for this server only
    (CALENDAR_SYNC_ALLOW_PRIVATE_ADDRESSES, off in every other set-up). None, said on the console,
    when it cannot start (the port is taken): the rest of the sandbox runs without it."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", int(port)))
        except OSError:
            print(f"Sandbox: port {port} is taken, no CalDAV server (SANDBOX_CALDAV_PORT moves it)", flush=True)
            return None
    storage.mkdir(parents=True, exist_ok=True)
    (storage / "users").write_text(f"{SANDBOX_CALDAV_USER}:{SANDBOX_CALDAV_PASSWORD}\n")
    radicale = subprocess.Popen(
        [str(PY), "-m", "radicale", "--server-hosts", f"127.0.0.1:{port}", "--auth-type", "htpasswd"]
        + ["--auth-htpasswd-filename", str(storage / "users"), "--auth-htpasswd-encryption", "plain"]
        + ["--auth-delay", "0", "--storage-filesystem-folder", str(storage / "collections")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=0.2).close()
            break
        except OSError:
            if radicale.poll() is not None or time.monotonic() > deadline:
                radicale.terminate()
                print(f"Sandbox: Radicale did not start on port {port}, no CalDAV server", flush=True)
                return None
            time.sleep(0.1)
    auth = base64.b64encode(f"{SANDBOX_CALDAV_USER}:{SANDBOX_CALDAV_PASSWORD}".encode()).decode()
    for method, path in (("PROPFIND", f"/{SANDBOX_CALDAV_USER}/"), ("MKCALENDAR", f"/{SANDBOX_CALDAV_USER}/calendar/")):
        server = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
        server.request(method, path, headers={"Authorization": f"Basic {auth}", "Depth": "0"})  # exists already: 405
        server.getresponse().read()
        server.close()
    os.environ["CALENDAR_SYNC_ALLOW_PRIVATE_ADDRESSES"] = "1"
    print(
        f"Sandbox CalDAV server (Radicale): http://127.0.0.1:{port}/ user {SANDBOX_CALDAV_USER}"
        f' password {SANDBOX_CALDAV_PASSWORD} ("Apple iCloud / CalDAV" with this address)',
        flush=True,
    )
    return radicale


def start_sandbox():
    """No Google or Microsoft client configured: run the bundled fakes of both and a CalDAV server
    (Radicale), and point the app at them. Returns the processes to stop."""
    google_port = os.environ.get("SANDBOX_GOOGLE_PORT", "8765")
    microsoft_port = os.environ.get("SANDBOX_MICROSOFT_PORT", "8766")
    fake = subprocess.Popen(
        [str(PY), "-m", "calendar_sync.testing", "--port", google_port, "--microsoft-port", microsoft_port],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    os.environ.update(json.loads(fake.stdout.readline()))
    os.environ["CALENDAR_SYNC_SANDBOX"] = "1"
    print(
        f"Sandbox: fake Google on http://127.0.0.1:{google_port}/ and fake Microsoft on http://127.0.0.1:{microsoft_port}/"
        " (set GOOGLE_CLIENT_ID or MICROSOFT_CLIENT_ID to use the real services)",
        flush=True,
    )
    try:
        radicale = start_caldav_sandbox(os.environ.get("SANDBOX_CALDAV_PORT", "5232"))
    except BaseException:
        fake.terminate()
        raise
    return [fake] + ([radicale] if radicale else [])


def serve(argv):
    os.environ.setdefault("DEBUG", "1")  # the local server: loopback http allowed, errors shown
    real = configured("GOOGLE_CLIENT_ID") or configured("MICROSOFT_CLIENT_ID")
    sandbox = [] if real else start_sandbox()
    try:
        manage("migrate", "--noinput")
        manage("seed_demo")
        print("Open http://127.0.0.1:8000/ and sign in as the demo member.", flush=True)
        subprocess.call([str(PY), str(ROOT / "manage.py"), "runserver", "127.0.0.1:8000", *argv], cwd=ROOT)
    except KeyboardInterrupt:
        pass
    finally:
        for process in sandbox:
            process.terminate()


def _whole_suite(argv):
    """Whether pytest `argv` runs the whole suite (perhaps narrowed by `-m`): no test named, and
    nothing that wants one process (`-k`, `-n`, `-p`, `--pdb`, `--trace`)."""
    args = iter(argv)
    for arg in args:
        if arg == "-m":
            next(args, None)  # its expression, not a test
        elif arg.startswith(("-k", "-n", "--numprocesses", "-p", "--pdb", "--trace")) or not arg.startswith("-"):
            return False
    return True


def test(argv):
    """`python3 dev.py test [pytest args]`. The whole suite without a broker (eager tasks, SQLite or a
    database: the quick local run) runs on every core (pytest-xdist, one test file per process). With
    CELERY_BROKER_URL set it runs in one process: the worker tests' Celery workers share the broker's
    queues, and two test processes would take each other's tasks."""
    parallel = (
        ["-n", "auto", "--dist", "loadfile"] if _whole_suite(argv) and not configured("CELERY_BROKER_URL") else []
    )
    sys.exit(subprocess.call([str(PY), "-m", "pytest", *parallel, *argv], cwd=ROOT))


def bench(argv):
    """`python3 dev.py bench NAME [args]`: run bench/NAME.py (needs PostgreSQL and Redis)."""
    if not argv:
        sys.exit("usage: python3 dev.py bench {overhead|throughput|economy|scale|load|backfill} [args]")
    sys.exit(subprocess.call([str(PY), str(ROOT / "bench" / f"{argv[0]}.py"), *argv[1:]], cwd=ROOT / "bench"))


def lint(argv):
    """`python3 dev.py lint`: the import contract (`.importlinter`: layers point down, the core knows no
    Celery), ruff (lint, import order and `ruff format --check`, 120 columns) over the tree, mypy over
    all of calendar_sync, and the docs site built with warnings as errors."""
    failed = subprocess.call(
        [str(VENV / ("Scripts/lint-imports.exe" if os.name == "nt" else "bin/lint-imports")), "--no-cache"], cwd=ROOT
    )
    failed |= subprocess.call([str(PY), "-m", "ruff", "check", ".", *argv], cwd=ROOT)
    failed |= subprocess.call([str(PY), "-m", "ruff", "format", "--check", "."], cwd=ROOT)
    failed |= subprocess.call([str(PY), "-m", "mypy"], cwd=ROOT)
    with tempfile.TemporaryDirectory() as site:
        failed |= subprocess.call(
            [str(PY), "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", site], cwd=ROOT
        )
    sys.exit(1 if failed else 0)


COMMANDS = {"serve": serve, "test": test, "bench": bench, "lint": lint}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(COMMANDS)}}} [args...]")
    ensure_venv()
    COMMANDS[sys.argv[1]](sys.argv[2:])
