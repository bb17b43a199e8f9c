#!/usr/bin/env python3
"""The two set-up commands: `python3 dev.py serve` and `python3 dev.py test`.

Each creates `.venv` (once, or again when requirements.txt changes), installs the pinned
requirements into it, and then runs inside it — so a fresh clone needs only Python 3.11+.
"""
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
STAMP = VENV / ".requirements.sha256"


def ensure_venv():
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and PY.exists():
        return
    if not PY.exists():
        print("Creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("Installing pinned requirements ...", flush=True)
    subprocess.check_call([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    subprocess.check_call([str(PY), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements.txt")])
    STAMP.write_text(digest)


def manage(*args):
    subprocess.check_call([str(PY), str(ROOT / "manage.py"), *args], cwd=ROOT)


def serve(argv):
    os.environ.setdefault("DEBUG", "1")  # the local server: loopback http allowed, errors shown
    manage("migrate", "--noinput")
    manage("seed_demo")
    os.execv(str(PY), [str(PY), str(ROOT / "manage.py"), "runserver", "127.0.0.1:8000", *argv])


def test(argv):
    result = subprocess.call([str(PY), "-m", "pytest", *argv], cwd=ROOT)
    sys.exit(result)


COMMANDS = {"serve": serve, "test": test}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(COMMANDS)}}} [args...]")
    ensure_venv()
    COMMANDS[sys.argv[1]](sys.argv[2:])
