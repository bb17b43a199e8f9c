"""The one place settings are read: `CALENDAR_SYNC = {...}` in the host's settings.

Read lazily on every call, so `override_settings(CALENDAR_SYNC=...)` works in tests. Each
provider declares its own keys and defaults (`BaseProvider.settings`) and reads them through
`BaseProvider.setting`, which passes them here: still one accessor, and this module imports no provider.
"""

from collections.abc import Mapping
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Where the OAuth callback sends the browser back to, and the base of deep links.
    "FRONTEND_URL": "",
    # Where the callback sends staff back after connecting a shared calendar ("" = FRONTEND_URL).
    "SHARED_FRONTEND_URL": "",
    # Seconds an OAuth state stays valid.
    "STATE_MAX_AGE": 600,
    # Refresh an access token this many seconds before it expires.
    "REFRESH_MARGIN": 300,
    # HTTP timeout (seconds) for every call to the provider.
    "HTTP_TIMEOUT": 15,
    # Request limits per provider, kept for every worker by the quota governor: per connection
    # ("connection"), per app ("app"), requests in flight per mailbox ("concurrent"). A host's entries
    # merge over these (the providers' published limits), provider by provider.
    "QUOTAS": {
        "google": {"connection": "600/minute", "app": "10000/minute"},
        "microsoft": {"connection": "10000/10 minutes", "concurrent": 4},
    },
    # Where the governor keeps its counts: "redis://host:6379/3" shares them between every worker;
    # "memory://" keeps them in each process (one process, eager tasks, tests).
    "QUOTA_STORAGE": "memory://",
    # Longest a request waits (seconds) for room in a window or a Retry-After; longer, its task is retried later.
    "QUOTA_MAX_WAIT": 5,
    # Share of each connection's window that bulk work (backfill, calendar move, resync, pulls) may use.
    "QUOTA_BULK_SHARE": 0.5,
    # While the quota Redis is unreachable, each process keeps this share of every limit in memory.
    "QUOTA_FALLBACK_SHARE": 0.25,
    # Task retries for transient errors: attempts and backoff (seconds, doubled, with jitter).
    "MAX_RETRIES": 8,
    "RETRY_BACKOFF": 2,
    "RETRY_BACKOFF_MAX": 600,
    # Seconds writes to a connection pause after the provider's usage limit (Google's "Calendar usage
    # limits exceeded": the account can't write for hours; retrying sooner only prolongs it).
    "USAGE_LIMIT_PAUSE": 3 * 3600,
    # Sweeper: work pending longer than this (seconds) is re-enqueued, at most SWEEP_BATCH a run.
    "SWEEP_STALE_AFTER": 60,
    "SWEEP_BATCH": 500,
    # DRF rate for starting or completing a connection, per member; for the OAuth callback, per flow (its state).
    "CONNECT_THROTTLE_RATE": "30/min",
    # DRF rate for requests that call the provider (test, calendars, calendar choice, busy times),
    # per member or shared owner.
    "PROVIDER_CALL_THROTTLE_RATE": "20/min",
    # Push notifications for one connection within this many seconds of the last one that pulled
    # are covered by that pull (replays and bursts cost one pull; 0 = every notification pulls).
    "PUSH_COALESCE_SECONDS": 1,
    # Seconds a busy-times answer is reused for the same owner and window (a form being edited).
    "BUSY_CACHE_SECONDS": 60,
    # Longest window (days) a busy-times request may ask for.
    "BUSY_MAX_DAYS": 90,
    # Shared calendars are always read at least this many days ahead for bookings made outside the
    # app: more than the host lets bookings be made ahead (a year by default, as series need).
    "PULL_WINDOW_DAYS": 366,
    # Keep the titles of events made outside the app in busy blocks (off: times only).
    "PULL_KEEP_TITLES": False,
    # The scheduled pull skips a shared calendar read (on schedule or on a push notification) within this
    # many seconds: keep it below beat's pull interval (300 s by default).
    "PULL_STALE_AFTER": 240,
    # Public https base URL the providers may call with push notifications ("" = pull only).
    "PUSH_URL": "",
    # The health check refreshes connections not used for this many seconds.
    "HEALTH_IDLE_SECONDS": 7 * 24 * 3600,
    # Days the access log (one row per use of a stored token) is kept; the sweeper deletes older rows.
    "ACCESS_LOG_RETENTION_DAYS": 90,
    # Most access-log rows one sweep deletes (a bounded delete per run keeps each run short).
    "ACCESS_LOG_PRUNE_BATCH": 5000,
    # "celery": syncs and other work go to the host's Celery broker; "inline": they run in the process
    # that asked, after its commit (no broker or worker, but provider calls on the request path).
    "SYNC_MODE": "celery",
    # Celery queues: interactive work (a booking's sync) goes to QUEUE, bulk work (backfill, calendar
    # move, resync of many, pulls, health) to BULK_QUEUE, so members never wait behind a backfill.
    # Workers consume both: `celery -A proj worker -Q calendar_sync,calendar_sync.bulk`.
    "QUEUE": "calendar_sync",
    "BULK_QUEUE": "calendar_sync.bulk",
    # Operations sent per provider call by bulk work; the job's progress is saved after each.
    "BULK_CHUNK": 50,
    # Watched models: {"key": "dotted.path.to.EventSource subclass"}.
    "SOURCES": {},
    # Host objects that may own a shared calendar (a room's): {"kind": "app_label.Model"}.
    "SHARED_OWNERS": {},
    # Whether events in shared calendars name the member who booked (hosts read it in EventSource.event()).
    "SHARED_SHOW_OWNER": True,
    # Let addresses members type (CalDAV servers, ICS links) reach loopback and private networks, over
    # plain http too: for tests and a sandbox only (calendar_sync.fetch).
    "ALLOW_PRIVATE_ADDRESSES": False,
}


def get_setting(name: str, defaults: Mapping[str, Any] | None = None) -> Any:
    """Return CALENDAR_SYNC[name], falling back to the documented default (a provider passes its own
    `defaults`: its keys are declared in its module, which this one does not import)."""
    if defaults is not None and name in defaults:
        default = defaults[name]
    elif name in DEFAULTS:
        default = DEFAULTS[name]
    else:
        raise KeyError(f"Unknown calendar_sync setting {name!r}")
    return getattr(settings, "CALENDAR_SYNC", {}).get(name, default)
