"""The app's views decide their own permissions: in a host with DRF's defaults (AllowAny) or session-only
authentication, every member endpoint answers an anonymous request 401 JSON with a challenge.

DRF binds a view's defaults when the class is defined, so each host configuration runs in its own process.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, re, sys
import django
from django.conf import settings

settings.configure(
    SECRET_KEY="probe-" + "k" * 50, SALT_KEY="probe-salt", ALLOWED_HOSTS=["testserver"], ROOT_URLCONF="calendar_sync.urls",
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions", "rest_framework", "calendar_sync"],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware", "django.contrib.auth.middleware.AuthenticationMiddleware"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    CALENDAR_SYNC={"SOURCES": {}}, **json.loads(sys.argv[1]),
)
django.setup()
from django.test import Client
from rest_framework.permissions import AllowAny
from calendar_sync import urls

values = {"provider": "google", "kind": "room", "owner_id": "1", "pk": "00000000-0000-0000-0000-000000000000"}
answers, public = [], []
for pattern in urls.urlpatterns:
    view = getattr(pattern.callback, "cls", None)
    if view is None:  # plain Django views (push webhook, .ics feed) authenticate by their own secrets
        continue
    if AllowAny in view.permission_classes:
        public.append(view.__name__)
        continue
    path = "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: values[m[1]], pattern.pattern.regex.pattern).lstrip("^").removesuffix("$").removesuffix("/?")
    for method in ("get", "post", "put", "patch", "delete"):
        if hasattr(view, method):
            response = getattr(Client(), method)(path)
            answers.append([method.upper(), path, response.status_code, response.get("WWW-Authenticate"), response.json()])
print(json.dumps({"answers": answers, "public": public}))
"""

HOSTS = {
    "DRF defaults (AllowAny; session and basic)": {},
    "session only, AllowAny": {
        "REST_FRAMEWORK": {
            "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
            "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
        }
    },
    "token first, IsAdminUser": {
        "REST_FRAMEWORK": {
            "DEFAULT_AUTHENTICATION_CLASSES": [
                "rest_framework.authentication.SessionAuthentication",
                "rest_framework.authentication.TokenAuthentication",
            ],
            "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
        },
    },
}


@pytest.mark.parametrize("host", HOSTS)
def test_anonymous_gets_401_json_on_every_member_endpoint(host):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HOSTS[host])], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.splitlines()[-1])
    assert probe["public"] == ["CallbackView"]  # the OAuth callback needs no login; nothing else does
    paths = {path for _, path, *_ in probe["answers"]}
    assert {"/status", "/activity", "/ical", "/busy", "/auth/google", "/shared", "/shared/room/1/status"} <= paths
    for method, path, status, challenge, body in probe["answers"]:
        assert status == 401, (method, path, status, body)
        assert challenge, (method, path)
        assert body["code"] == "not_authenticated" and body["detail"], (method, path, body)
    if "TokenAuthentication" in json.dumps(HOSTS[host]):
        assert {challenge for *_, challenge, _ in probe["answers"]} == {"Token"}
