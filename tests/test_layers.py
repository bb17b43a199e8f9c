"""The import contract (`.importlinter`, run by `python3 dev.py lint`): layers point down, and the core
never imports Celery or an entry point. Shown failing on a copy of the package with one upward import."""

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONFIG = configparser.ConfigParser()
CONFIG.read(ROOT / ".importlinter")
LAYERS, NO_CELERY, NO_CYCLES = (
    CONFIG[f"importlinter:contract:{key}"]["name"] for key in ("layers", "core-knows-no-celery", "no-cycles")
)


def lint_imports(where):
    """lint-imports over the calendar_sync found first on the path in `where`: (exit code, report)."""
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(where / ".importlinter")],
        cwd=where,
        env={"PATH": "", "PYTHONPATH": str(where)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, " ".join((result.stdout + result.stderr).split())  # contract names wrap


def test_the_tree_keeps_the_contract():
    code, report = lint_imports(ROOT)
    assert code == 0, report
    for name in (LAYERS, NO_CELERY, NO_CYCLES):
        assert f"{name} KEPT" in report, report


@pytest.mark.parametrize(
    "module, line, broken",
    [
        (
            "channels.py",
            "from . import tasks",
            [LAYERS, NO_CELERY, NO_CYCLES],
        ),  # the core enqueueing (tasks imports channels)
        ("types.py", "import celery", [NO_CELERY]),
        (
            "conf.py",
            "from .providers import provider_classes",
            [LAYERS, NO_CYCLES],
        ),  # the settings reading the registry
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path, module, line, broken):
    shutil.copytree(ROOT / "calendar_sync", tmp_path / "calendar_sync", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    path = tmp_path / "calendar_sync" / module
    path.write_text(f"{path.read_text()}\n{line}  # an upward import\n")
    code, report = lint_imports(tmp_path)
    assert code != 0, report
    for name in (LAYERS, NO_CELERY, NO_CYCLES):
        assert f"{name} {'BROKEN' if name in broken else 'KEPT'}" in report, report
    assert f"calendar_sync.{module[:-3]}" in report  # the report names the importer
