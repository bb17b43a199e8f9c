"""The quota governor: every request to a calendar API stays within the provider's limits, however
many worker processes and machines send them.

The core names the connection a provider call is for (`connection`) and whether it is bulk work
(`bulk`); the providers' HTTP layer wraps every request in `acquire(parts)`. Limits are sliding
windows (`CALENDAR_SYNC["QUOTAS"]`, defaults the providers' published figures) kept in
`CALENDAR_SYNC["QUOTA_STORAGE"]` (Redis, shared by every worker: the `limits` library's moving windows,
tested and counted in one round trip per request with the throttle mark; or memory://, this process
only, by `limits` itself), plus Graph's cap on requests in flight per mailbox (a leased semaphore) and a
per-connection "throttled until" mark set from a Retry-After (`throttle`).

A request that would exceed a window waits for room, at most QUOTA_MAX_WAIT seconds; past that it
raises TransientError(code="quota", retry_after=...) without calling, and its task is retried then.
If the quota Redis cannot be reached, each process falls back to QUOTA_FALLBACK_SHARE of every
limit in memory and logs it once per outage: slower, never unlimited.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

from .conf import DEFAULTS, get_setting
from .exceptions import ConfigurationError, TransientError

logger = logging.getLogger(__name__)

#: Seconds added to every window: a request counts from when it leaves until a little after the
#: provider could have counted it, so no window of the provider's clock sees more than the limit.
MARGIN = 1
#: After a failed call to the quota Redis, this process stays on its fallback this many seconds.
RETRY_STORAGE_AFTER = 5.0
POLL = 0.02  # seconds between looks at a full semaphore
PREFIX = "calendar_sync:quota"


@dataclass(frozen=True)
class _Scope:
    provider: str
    key: str


@dataclass
class _Call:
    """One `connection()` block: after a refusal its next requests are refused at once (a backfill's
    later batches do not each wait QUOTA_MAX_WAIT for the same full window)."""

    scope: _Scope
    refused_until: float = 0.0
    admitted: int = 0  # requests let through so far: 0 means nothing reached the provider


_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("calendar_sync_quota_call", default=None)
_bulk: contextvars.ContextVar[bool] = contextvars.ContextVar("calendar_sync_quota_bulk", default=False)
_unscoped = threading.local()  # throttle marks of calls made outside any connection (this thread's)


# --- what the core and the providers call ------------------------------------------------------------
@contextmanager
def connection(provider_name: str, connection_key: Any) -> Iterator[_Call]:
    """Provider requests made inside count against this connection's windows. Yields the call, whose
    `admitted` says how many requests were let through (a block inside one for the same connection
    is part of it)."""
    scope, outer = _Scope(str(provider_name), str(connection_key)), _call.get()
    call = outer if outer is not None and outer.scope == scope else _Call(scope)
    reset = _call.set(call)
    try:
        yield call
    finally:
        _call.reset(reset)


@contextmanager
def bulk() -> Iterator[None]:
    """Requests made inside are bulk work: they also count against QUOTA_BULK_SHARE of each
    connection's window, so interactive work always finds room."""
    reset = _bulk.set(True)
    try:
        yield
    finally:
        _bulk.reset(reset)


@contextmanager
def acquire(parts: int = 1) -> Iterator[None]:
    """Around one HTTP request of `parts` calls (a batch counts its parts): wait briefly for the
    connection's throttle mark to pass, for room in its windows and for a slot in its in-flight cap;
    raise TransientError(code="quota") rather than wait longer than QUOTA_MAX_WAIT."""
    call = _call.get()
    deadline = time.monotonic() + float(get_setting("QUOTA_MAX_WAIT"))
    if call is None:  # a provider used directly, outside the core: only its own Retry-After applies
        _wait_until(getattr(_unscoped, "until", 0.0), deadline)
        yield
        return
    if call.refused_until > time.time():
        raise _refusal(call.refused_until - time.time(), "an earlier request of this call was refused")
    try:
        slot = _admit(call.scope, parts, deadline)
    except TransientError as exc:
        call.refused_until = time.time() + (exc.retry_after or 0.0)
        raise
    call.admitted += 1
    try:
        yield
    finally:
        if slot is not None:
            slot[0].release(call.scope, slot[1])


def largest_request() -> int:
    """The most calls one request may carry on the current connection (a batch's parts): the
    smallest window it counts in. Unlimited (a large number) outside a connection."""
    call = _call.get()
    if call is None:
        return 1_000_000
    backend = _backend()
    windows = _windows(call.scope, _limits(call.scope.provider), backend.share)
    return min((item.amount for item, _ in windows), default=1_000_000)


def _admit(scope: _Scope, parts: int, deadline: float) -> tuple[Any, list[str]] | None:
    """Wait for the throttle mark, count in the windows, take an in-flight slot (when capped)."""
    limits_ = _limits(scope.provider)
    while True:
        backend = _backend()
        try:
            wait = backend.admit(scope, _windows(scope, limits_, backend.share), parts)
        except _StorageDown:
            continue  # `_backend()` now answers with this process's fallback
        if wait is None:
            break
        seconds, why = wait
        _wait_or_raise(seconds, why, deadline)
    if limits_.get("concurrent"):
        return _hold_slot(scope, int(limits_["concurrent"]), parts, deadline)
    return None


def throttle(seconds: float) -> None:
    """The provider said wait (a Retry-After, Graph's MailboxConcurrency): nothing is sent to the
    current connection, by any worker, for `seconds`."""
    until = time.time() + max(0.0, float(seconds))
    call = _call.get()
    if call is None:
        _unscoped.until = max(getattr(_unscoped, "until", 0.0), until)
        return
    scope = call.scope
    logger.info("calendar connection %s:%s throttled for %.1f s", scope.provider, scope.key, seconds)
    try:
        _backend().mark(scope, until)
    except _StorageDown:
        _backend().mark(scope, until)


def throttled_until(provider_name: str, connection_key: Any) -> dt.datetime | None:
    """Until when the provider asked us to leave this connection alone (aware UTC), or None."""
    scope = _Scope(str(provider_name), str(connection_key))
    try:
        until = _backend().marked_until(scope)
    except _StorageDown:
        until = _backend().marked_until(scope)
    return dt.datetime.fromtimestamp(until, dt.UTC) if until > time.time() else None


def problems() -> list[str]:
    """What is wrong with the quota settings (for the system checks); empty when nothing."""
    found = []
    quotas_ = get_setting("QUOTAS")
    if not isinstance(quotas_, dict) or not all(isinstance(v, dict) for v in quotas_.values()):
        return ['CALENDAR_SYNC["QUOTAS"] must map provider names to {"connection", "app", "concurrent"}.']
    for provider in set(quotas_) | set(DEFAULTS["QUOTAS"]):
        limits_ = _limits(provider)
        for kind in ("connection", "app"):
            if limits_.get(kind):
                try:
                    _item(str(limits_[kind]), 1.0)
                except ConfigurationError as exc:
                    found.append(f"{exc} ({provider} {kind})")
        concurrent = limits_.get("concurrent")
        if concurrent is not None and (
            isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 0
        ):
            found.append(f'CALENDAR_SYNC["QUOTAS"]["{provider}"]["concurrent"] must be a whole number (0: no cap).')
    storage = str(get_setting("QUOTA_STORAGE") or "")
    if not storage.startswith(("memory://", "redis://", "rediss://", "redis+unix://")):
        found.append('CALENDAR_SYNC["QUOTA_STORAGE"] must be "memory://" or a redis:// URL.')
    return found


def reset() -> None:
    """Forget this process's in-memory counts, marks and fallback state (tests)."""
    _backends.clear()
    _state.down_since = None
    _state.retry_at = 0.0
    _unscoped.until = 0.0


# --- limits --------------------------------------------------------------------------------------------
def _limits(provider: str) -> dict[str, Any]:
    """QUOTAS for one provider: the host's entries merged over the published defaults."""
    merged = dict(DEFAULTS["QUOTAS"].get(provider) or {})
    merged.update((get_setting("QUOTAS") or {}).get(provider) or {})
    return merged


@lru_cache(maxsize=64)
def _item(spec: str, share: float) -> RateLimitItem:
    """A limit string ("600/minute", "10000/10 minutes") as a moving window of MARGIN more seconds,
    `share` of its amount (at least one request)."""
    try:
        parsed = parse(str(spec))
    except ValueError:
        raise ConfigurationError(f'CALENDAR_SYNC["QUOTAS"]: {spec!r} is not a limit like "600/minute".') from None
    amount = max(1, int(parsed.amount * share))
    return RateLimitItemPerSecond(amount, parsed.get_expiry() + MARGIN, namespace=PREFIX)


def _windows(scope: _Scope, limits_: dict[str, Any], share: float) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
    windows: list[tuple[RateLimitItem, tuple[str, ...]]] = []
    if limits_.get("connection"):
        windows.append((_item(limits_["connection"], share), (scope.provider, "connection", scope.key)))
        if _bulk.get():
            bulk_share = share * float(get_setting("QUOTA_BULK_SHARE"))
            windows.append((_item(limits_["connection"], bulk_share), (scope.provider, "bulk", scope.key)))
    if limits_.get("app"):
        windows.append((_item(limits_["app"], share), (scope.provider, "app")))
    return windows


# --- waiting ---------------------------------------------------------------------------------------------
def _wait_until(until: float, deadline: float) -> None:
    """Sleep until a throttle mark (epoch seconds) passes, or raise when it lasts past the deadline."""
    while until > (now := time.time()):
        _wait_or_raise(until - now, THROTTLED, deadline)


THROTTLED = "the provider asked us to wait (Retry-After)"
FULL = "the connection's request window is full"


def _wait_or_raise(seconds: float, why: str, deadline: float) -> None:
    seconds = max(seconds, 0.001)
    if time.monotonic() + seconds > deadline:
        raise _refusal(seconds, why)
    time.sleep(seconds)


def _refusal(seconds: float, why: str) -> TransientError:
    return TransientError(f"Quota: {why}; try again in {seconds:.1f} s.", code="quota", retry_after=seconds)


def _hold_slot(scope: _Scope, limit: int, parts: int, deadline: float) -> tuple[Any, list[str]]:
    """Slots in the connection's in-flight cap, all or none: one per part up to the cap, since the
    service runs a batch's parts side by side (Graph: four at a time per mailbox)."""
    while True:
        backend = _backend()
        cap = max(1, int(limit * backend.share))
        tokens = [uuid.uuid4().hex for _ in range(min(parts, cap))]
        try:
            if backend.enter(scope, cap, tokens):
                return backend, tokens
        except _StorageDown:
            continue
        _wait_or_raise(POLL, "the mailbox has as many requests in flight as it allows", deadline)


# --- storage: Redis (shared) or memory (this process), with the fallback ------------------------------------
class _StorageDown(Exception):
    """The quota Redis failed; the process switched to its fallback (retry the step)."""


class _Memory:
    """Counts, marks and slots in this process: the embedded default, and the fallback."""

    def __init__(self, share: float = 1.0):
        self.share = share
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.lock = threading.Lock()
        self.marks: dict[_Scope, float] = {}
        self.slots: dict[_Scope, int] = {}

    def admit(self, scope: _Scope, windows: list, parts: int) -> tuple[float, str] | None:
        """None when the connection is not throttled and `parts` were counted in every window; else
        (seconds to wait, why)."""
        with self.lock:
            until = self.marks.get(scope, 0.0)
            if until > time.time():
                return until - time.time(), THROTTLED
            wait = _take(self.limiter, windows, parts)
        return None if wait is None else (wait, FULL)

    def marked_until(self, scope: _Scope) -> float:
        return self.marks.get(scope, 0.0)

    def mark(self, scope: _Scope, until: float) -> None:
        with self.lock:
            self.marks[scope] = max(self.marks.get(scope, 0.0), until)

    def enter(self, scope: _Scope, limit: int, tokens: list[str]) -> bool:
        with self.lock:
            if self.slots.get(scope, 0) + len(tokens) > limit:
                return False
            self.slots[scope] = self.slots.get(scope, 0) + len(tokens)
            return True

    def release(self, scope: _Scope, tokens: list[str]) -> None:
        with self.lock:
            self.slots[scope] = max(0, self.slots.get(scope, 0) - len(tokens))


def _take(limiter: MovingWindowRateLimiter, windows: list, parts: int) -> float | None:
    """Test every window, then count in each (the memory store's lock held: all or none): None when
    counted, else the seconds until one has room. Redis does the same in one script (`_ADMIT`)."""
    for item, ids in windows:
        cost = min(parts, item.amount)
        if not limiter.test(item, *ids, cost=cost):
            return max(limiter.get_window_stats(item, *ids).reset_time - time.time(), POLL)
    for item, ids in windows:
        if not limiter.hit(item, *ids, cost=min(parts, item.amount)):
            return POLL
    return None


# Leases for in-flight requests: a killed worker's slot frees itself when its lease ends.
# ARGV: now, limit, lease end, lease in ms, then one member per slot wanted (all or none).
_ENTER = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
if redis.call('zcard', KEYS[1]) + #ARGV - 4 > tonumber(ARGV[2]) then
  return 0
end
for i = 5, #ARGV do
  redis.call('zadd', KEYS[1], ARGV[3], ARGV[i])
end
redis.call('pexpire', KEYS[1], ARGV[4])
return 1
"""
# One round trip per provider request: the connection's throttle mark, then room for the request in
# every window (all or none), then one entry per part in each. The windows are the `limits` library's
# moving windows in Redis, kept as it keeps them (a list of timestamps per key, newest first, at most
# `limit` long): its own scripts would take a round trip per window to test and one more to count.
# KEYS: the throttle mark, then one key per window. ARGV: now, parts, then (limit, seconds) per window.
# Returns {0} when counted, else {1, seconds} (throttled) or {2, seconds} (a window is full).
_ADMIT = """
local now, parts = tonumber(ARGV[1]), tonumber(ARGV[2])
local throttled = tonumber(redis.call('get', KEYS[1]) or '0')
if throttled > now then
  return {1, tostring(throttled - now)}
end
for i = 2, #KEYS do
  local limit, expiry = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local oldest = tonumber(redis.call('lindex', KEYS[i], limit - math.min(parts, limit)) or '0')
  if oldest >= now - expiry then
    return {2, tostring(oldest + expiry - now)}
  end
end
for i = 2, #KEYS do
  local limit, expiry = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  for _ = 1, math.min(parts, limit) do
    redis.call('lpush', KEYS[i], now)
  end
  redis.call('ltrim', KEYS[i], 0, limit - 1)
  redis.call('expire', KEYS[i], expiry)
end
return {0}
"""
_MARK = """
local current = tonumber(redis.call('get', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class _Redis:
    """Counts, marks and slots in Redis, shared by every worker process and machine."""

    share = 1.0

    def __init__(self, uri: str):
        # Short timeouts: a Redis that does not answer means the fallback, not a stuck worker.
        self.storage = RedisStorage(uri, wrap_exceptions=True, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.client = self.storage.storage  # the storage's own redis client
        self.admit_script = self.client.register_script(_ADMIT)
        self.enter_script = self.client.register_script(_ENTER)
        self.mark_script = self.client.register_script(_MARK)

    def _run(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any failure of the quota store: fall back, never unlimited
            _storage_failed(exc)
            raise _StorageDown from None
        _storage_ok()
        return result

    def admit(self, scope: _Scope, windows: list, parts: int) -> tuple[float, str] | None:
        keys = [self._throttle_key(scope), *(self.storage.prefixed_key(item.key_for(*ids)) for item, ids in windows)]
        args = [time.time(), parts, *(value for item, _ in windows for value in (item.amount, item.get_expiry()))]
        answer = self._run(self.admit_script, keys=keys, args=args)
        if answer[0] == 0:
            return None
        return max(float(answer[1]), POLL), THROTTLED if answer[0] == 1 else FULL

    def _throttle_key(self, scope: _Scope) -> str:
        return f"{PREFIX}:throttle:{scope.provider}:{scope.key}"

    def marked_until(self, scope: _Scope) -> float:
        return float(self._run(self.client.get, self._throttle_key(scope)) or 0.0)

    def mark(self, scope: _Scope, until: float) -> None:
        ms = max(1, int((until - time.time()) * 1000))
        self._run(self.mark_script, keys=[self._throttle_key(scope)], args=[until, ms])

    def enter(self, scope: _Scope, limit: int, tokens: list[str]) -> bool:
        lease = 2 * float(get_setting("HTTP_TIMEOUT")) + 2  # connecting and reading: a request never outlives it
        now = time.time()
        key = f"{PREFIX}:inflight:{scope.provider}:{scope.key}"
        args = [now, limit, now + lease, int(lease * 1000), *tokens]
        return bool(self._run(self.enter_script, keys=[key], args=args))

    def release(self, scope: _Scope, tokens: list[str]) -> None:
        try:
            self._run(self.client.zrem, f"{PREFIX}:inflight:{scope.provider}:{scope.key}", *tokens)
        except _StorageDown:
            pass  # the lease ends on its own


class _State:
    down_since: float | None = None
    retry_at = 0.0


_state = _State()
_backends: dict[str, Any] = {}
_backends_lock = threading.Lock()


def _backend() -> Any:
    """The store for QUOTA_STORAGE, or this process's fallback while the quota Redis is down."""
    uri = str(get_setting("QUOTA_STORAGE") or "memory://")
    if uri.startswith("memory://"):
        key = uri
    elif _state.down_since is not None and time.monotonic() < _state.retry_at:
        key = "fallback"
    else:
        key = uri
    backend = _backends.get(key)
    if backend is None:
        with _backends_lock:
            backend = _backends.get(key)
            if backend is None:
                if key == "fallback":
                    backend = _Memory(float(get_setting("QUOTA_FALLBACK_SHARE")))
                elif key.startswith("memory://"):
                    backend = _Memory()
                else:
                    backend = _Redis(uri)
                _backends[key] = backend
    return backend


def _storage_failed(exc: Exception) -> None:
    if _state.down_since is None:
        _state.down_since = time.monotonic()
        logger.warning(
            "calendar quota storage unreachable (%s): each process now keeps %s of every limit in memory",
            type(exc).__name__,
            get_setting("QUOTA_FALLBACK_SHARE"),
        )
    _state.retry_at = time.monotonic() + RETRY_STORAGE_AFTER


def _storage_ok() -> None:
    if _state.down_since is not None:
        logger.warning(
            "calendar quota storage reachable again after %.0f s: shared limits resume",
            time.monotonic() - _state.down_since,
        )
        _state.down_since = None
