"""`python3 dev.py test`: the whole suite runs on every core, a chosen test in one process."""

import pytest

import dev


@pytest.mark.parametrize(
    "argv, whole",
    [
        ([], True),
        (["-m", "not slow"], True),
        (["-m", "not slow", "-q", "-x"], True),
        (["-k", "oauth", "-x"], False),
        (["-koauth"], False),
        (["tests/test_oauth.py"], False),
        (["tests/test_oauth.py::test_state_is_single_use"], False),
        (["-m", "not slow", "tests/test_sync.py"], False),
        (["-n", "4"], False),
        (["-p", "no:cacheprovider"], False),
        (["--pdb"], False),
    ],
)
def test_only_the_whole_suite_is_spread_over_the_cores(argv, whole):
    assert dev._whole_suite(argv) is whole


def test_a_configured_broker_keeps_the_suite_in_one_process(monkeypatch):
    """The worker tests' real Celery workers share the broker's queues: two test processes would take
    each other's tasks."""
    calls = []
    monkeypatch.setattr(dev.subprocess, "call", lambda cmd, cwd: calls.append(cmd) or 0)
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    with pytest.raises(SystemExit):
        dev.test(["-m", "not slow"])
    monkeypatch.delenv("CELERY_BROKER_URL")
    monkeypatch.setattr(dev, "configured", lambda name: False)
    with pytest.raises(SystemExit):
        dev.test(["-m", "not slow"])
    assert "-n" not in calls[0]
    assert calls[1][calls[1].index("-n") : calls[1].index("-n") + 2] == ["-n", "auto"]
