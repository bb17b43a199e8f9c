"""ManageHub settings, read from the environment (and `.env`) with django-environ.

Every variable is documented in `.env.example`. With nothing set, the project runs on
SQLite with Celery tasks executed eagerly in-process: no server needed.
"""

import os
from datetime import timedelta
from pathlib import Path
from tempfile import gettempdir

import environ

from calendar_sync.beat import beat_schedule

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-secret-key-change-me")
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
# Salt(s) for the token encryption key; a comma-separated list rotates (first one encrypts).
SALT_KEY = env.list("SALT_KEY", default=["dev-only-insecure-salt"])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "managehub.apps.AdminConfig",  # django.contrib.admin with the credential-safe site (managehub.admin)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from our static files, not a CDN
    "calendar_sync",
    "bookings",
]

MIDDLEWARE = [
    "managehub.api.JsonErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Django's backend, given usernames in one normal form (the sign-in throttles count that form).
AUTHENTICATION_BACKENDS = ["managehub.signin.ModelBackend"]

ROOT_URLCONF = "managehub.urls"
WSGI_APPLICATION = "managehub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Connections kept for this many seconds (web requests and Celery tasks alike), checked before reuse.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Writers queue for the lock from BEGIN (instead of failing with "database is locked" at the
    # first write), so a lost race gets the same 409 as on PostgreSQL.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})
    # Tests use a file too (not shared-cache memory, whose table locks fail at once), so they see the same locking.
    DATABASES["default"].setdefault("TEST", {}).setdefault(
        "NAME", str(Path(gettempdir()) / f"managehub-test-{os.getpid()}.sqlite3")
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Throttle counters and cached busy times; per process unless shared (e.g. redis://127.0.0.1:6379/2).
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "managehub.api.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PARSER_CLASSES": [
        "managehub.api.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "managehub.api.Pagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "managehub.api.exception_handler",
    # Sign-in attempts (API, /accounts/login/, /admin/login/) per account name and per client
    # address, each (brute force); the connect endpoints have their own.
    "DEFAULT_THROTTLE_RATES": {"login": env.str("LOGIN_THROTTLE_RATE", default="10/min")},
    # Proxies in front of the app: throttles trust X-Forwarded-For only that deep (0 = not at all).
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}
# API tokens (django-rest-knox): only a hash is stored; each token expires this many days after sign-in.
REST_KNOX = {"TOKEN_TTL": timedelta(days=env.int("API_TOKEN_TTL_DAYS", default=30)), "AUTH_HEADER_PREFIX": "Token"}
SPECTACULAR_SETTINGS = {
    "TITLE": "ManageHub API",
    "DESCRIPTION": "Workspaces, bookings and calendar sync (Google Calendar, Outlook).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request bodies get their own components: read-only fields left out, non-blank strings minLength 1.
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "BookingStatusEnum": "bookings.models.Booking.Status",
        "BookingConferenceEnum": "bookings.models.Booking.Conference",
        "ConferenceStatusEnum": ["none", "pending", "ready", "failed"],
        "ConnectionStatusEnum": ["active", "needs_reauth", "disconnected"],
    },
    # /api/docs/ works offline and sends no visitor to a CDN: drf-spectacular-sidecar's copies.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: with no broker configured, tasks run eagerly in the request (quick local runs).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
# Celery's own Django fixup closes every connection around each task unless told to reuse them;
# managehub.celery closes them as Django would instead (broken or older than CONN_MAX_AGE).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1_000_000)
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# With the broker down a booking still saves: give up publishing quickly (the sweeper has it).
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=600)}
# Every periodic task of the app, from the app's own helper (so none can be missing): the sweeper,
# room-calendar pulls (push notifications only make them sooner), push-channel renewal, the health check.
CELERY_BEAT_SCHEDULE = beat_schedule(
    sweep=env.int("CALENDAR_SYNC_SWEEP_SECONDS", default=60),
    pull=env.int("CALENDAR_SYNC_PULL_SECONDS", default=300),
    health=env.int("CALENDAR_SYNC_HEALTH_SECONDS", default=6 * 3600),
)

# Bookings: how far ahead they may be made (days; a year, as recurring series need) and how long
# one may last (hours). Room calendars are read further ahead than the horizon (bookings.E001).
BOOKING_HORIZON_DAYS = env.int("BOOKING_HORIZON_DAYS", default=365)
BOOKING_MAX_HOURS = env.int("BOOKING_MAX_HOURS", default=24)

CALENDAR_SYNC = {
    "GOOGLE_CLIENT_ID": env.str("GOOGLE_CLIENT_ID", default=""),
    "GOOGLE_CLIENT_SECRET": env.str("GOOGLE_CLIENT_SECRET", default=""),
    "GOOGLE_REDIRECT_URI": env.str(
        "GOOGLE_REDIRECT_URI", default="http://127.0.0.1:8000/api/calendar-sync/auth/google/callback" if DEBUG else ""
    ),
    "GOOGLE_OAUTH_AUTH_URI": env.str("GOOGLE_OAUTH_AUTH_URI", default="https://accounts.google.com/o/oauth2/auth"),
    "GOOGLE_OAUTH_TOKEN_URI": env.str("GOOGLE_OAUTH_TOKEN_URI", default="https://oauth2.googleapis.com/token"),
    "GOOGLE_OAUTH_REVOKE_URI": env.str("GOOGLE_OAUTH_REVOKE_URI", default="https://oauth2.googleapis.com/revoke"),
    "GOOGLE_API_ROOT": env.str("GOOGLE_API_ROOT", default="https://www.googleapis.com/"),
    "FRONTEND_URL": env.str("FRONTEND_URL", default="http://127.0.0.1:8000/integrations/calendar"),
    # Provider request limits, as JSON merged over the published ones, e.g.
    # {"google": {"connection": "600/minute", "app": "10000/minute"}, "microsoft": {"concurrent": 4}}.
    "QUOTAS": env.json("CALENDAR_SYNC_QUOTAS", default={}),
    # Where every worker counts them: the broker's Redis when the broker is Redis, else this process.
    "QUOTA_STORAGE": env.str(
        "CALENDAR_SYNC_QUOTA_STORAGE",
        default=CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "memory://",
    ),
    "SWEEP_STALE_AFTER": env.int("CALENDAR_SYNC_SWEEP_STALE_AFTER", default=60),
    "USAGE_LIMIT_PAUSE": env.int("CALENDAR_SYNC_USAGE_LIMIT_PAUSE", default=3 * 3600),
    "MICROSOFT_CLIENT_ID": env.str("MICROSOFT_CLIENT_ID", default=""),
    "MICROSOFT_CLIENT_SECRET": env.str("MICROSOFT_CLIENT_SECRET", default=""),
    "MICROSOFT_REDIRECT_URI": env.str(
        "MICROSOFT_REDIRECT_URI",
        default="http://127.0.0.1:8000/api/calendar-sync/auth/microsoft/callback" if DEBUG else "",
    ),
    "MICROSOFT_TENANT": env.str("MICROSOFT_TENANT", default="common"),
    "MICROSOFT_LOGIN_ROOT": env.str("MICROSOFT_LOGIN_ROOT", default="https://login.microsoftonline.com/"),
    "MICROSOFT_GRAPH_ROOT": env.str("MICROSOFT_GRAPH_ROOT", default="https://graph.microsoft.com/v1.0/"),
    "CONNECT_THROTTLE_RATE": env.str("CALENDAR_SYNC_CONNECT_THROTTLE_RATE", default="30/min"),
    "PROVIDER_CALL_THROTTLE_RATE": env.str("CALENDAR_SYNC_PROVIDER_CALL_THROTTLE_RATE", default="20/min"),
    "ACCESS_LOG_RETENTION_DAYS": env.int("CALENDAR_SYNC_ACCESS_LOG_RETENTION_DAYS", default=90),
    "BUSY_CACHE_SECONDS": env.int("CALENDAR_SYNC_BUSY_CACHE_SECONDS", default=60),
    "PULL_KEEP_TITLES": env.bool("CALENDAR_SYNC_PULL_KEEP_TITLES", default=False),
    # Room calendars are read a day beyond the booking horizon, so every bookable time is covered.
    "PULL_WINDOW_DAYS": BOOKING_HORIZON_DAYS + 1,
    "PUSH_URL": env.str("CALENDAR_SYNC_PUSH_URL", default=""),
    # CalDAV servers and ICS links on loopback or a private network, over http too: tests and the sandbox only.
    "ALLOW_PRIVATE_ADDRESSES": env.bool("CALENDAR_SYNC_ALLOW_PRIVATE_ADDRESSES", default=False),
    "PUSH_COALESCE_SECONDS": env.int("CALENDAR_SYNC_PUSH_COALESCE_SECONDS", default=1),
    "HEALTH_IDLE_SECONDS": env.int("CALENDAR_SYNC_HEALTH_IDLE_SECONDS", default=7 * 24 * 3600),
    "SOURCES": {"booking": "bookings.calendar.BookingSource"},
    # Workspaces can own a shared (room) calendar that gets every booking of that room.
    "SHARED_OWNERS": {"workspace": "bookings.Workspace"},
    "SHARED_SHOW_OWNER": env.bool("CALENDAR_SYNC_SHARED_SHOW_OWNER", default=True),
    "SHARED_FRONTEND_URL": env.str(
        "CALENDAR_SYNC_SHARED_FRONTEND_URL", default="http://127.0.0.1:8000/integrations/rooms"
    ),
}

# Email (the one "reconnect your calendar" message): console in DEBUG unless EMAIL_URL says otherwise.
vars().update(env.email_url("EMAIL_URL", default="consolemail://" if DEBUG else "smtp://localhost:25"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="ManageHub <calendar@localhost>")
ADMINS = [("Operators", email) for email in env.list("ADMINS", default=[])]

# Set by `python3 dev.py serve` when it runs the bundled fake Google instead of a real client.
CALENDAR_SYNC_SANDBOX = env.bool("CALENDAR_SYNC_SANDBOX", default=False)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "calendar-integration"
LOGOUT_REDIRECT_URL = "login"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # The OAuth callback's query string holds a one-time code and the state: never in a log line.
    "filters": {"redact_oauth": {"()": "managehub.log_filters.RedactOAuthQuery"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_oauth"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # These libraries log raw OAuth token responses and headers at DEBUG: never below WARNING.
    "loggers": {
        **{
            name: {"level": "WARNING"}
            for name in ("urllib3", "google_auth_httplib2", "googleapiclient", "google.auth", "httplib2")
        },
        # runserver's access log: same redaction on its own handler.
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
