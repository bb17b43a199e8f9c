"""Who a connection belongs to: a member, or a host object declared able to own a shared calendar.

CALENDAR_SYNC = {"SHARED_OWNERS": {"workspace": "bookings.Workspace"}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import models

from .conf import get_setting
from .exceptions import ConfigurationError
from .models import MEMBER, CalendarToken


@dataclass(frozen=True)
class Owner:
    """(kind, id) of a connection's owner: ("user", "5") for a member, ("workspace", "3") for a room."""

    kind: str
    id: str

    @classmethod
    def member(cls, user: Any) -> Owner:
        return cls(MEMBER, str(getattr(user, "pk", user)))

    @classmethod
    def of(cls, kind: str, pk: Any) -> Owner:
        return cls(kind, str(pk))

    @property
    def is_member(self) -> bool:
        return self.kind == MEMBER

    def lookup(self) -> dict[str, str]:
        """Filter kwargs for CalendarToken and SyncRecord."""
        return {"owner_kind": self.kind, "owner_id": self.id}

    def token(self) -> CalendarToken | None:
        """The write connection: where this owner's events go (a shared owner has only that one)."""
        return CalendarToken.objects.filter(write=True, **self.lookup()).first()

    def connections(self) -> models.QuerySet[CalendarToken]:
        """Every connection of this owner, oldest first."""
        return CalendarToken.objects.filter(**self.lookup()).order_by("created_at", "pk")

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


def shared_kinds() -> dict[str, str]:
    """{kind: "app_label.Model"} of host objects that may own a shared calendar."""
    return dict(get_setting("SHARED_OWNERS"))


def owner_model(kind: str) -> type[models.Model]:
    if kind == MEMBER:
        return get_user_model()
    try:
        return apps.get_model(shared_kinds()[kind])
    except (KeyError, LookupError, ValueError):
        raise ConfigurationError(f'No shared owner kind {kind!r} in CALENDAR_SYNC["SHARED_OWNERS"]') from None


def resolve(owner: Owner) -> models.Model | None:
    """The owner's object, or None when it does not exist or the id is not its own pk string.

    Only the canonical id (`str(obj.pk)`): "01", "001" or "0_1" would find the object with pk 1,
    but records and connections are keyed by the id string, so an alias would be another owner.
    """
    model = owner_model(owner.kind)
    try:
        obj = model._default_manager.filter(pk=owner.id).first()
    except (ValueError, TypeError, ValidationError):
        return None
    return obj if obj is not None and str(obj.pk) == owner.id else None


def label(owner: Owner, obj: models.Model | None = None) -> str:
    obj = obj if obj is not None else resolve(owner)
    return str(obj) if obj is not None else str(owner)


def parse(value: str) -> Owner:
    """ "workspace:3" -> Owner of a declared shared kind whose object exists; ValueError saying why not."""
    kind, _, pk = str(value).partition(":")
    if kind not in shared_kinds() or not pk:
        raise ValueError(f"expected KIND:ID with KIND one of {', '.join(shared_kinds()) or '(none declared)'}")
    owner = Owner(kind, pk)
    if resolve(owner) is None:
        raise ValueError(f"no {kind} {pk!r}")
    return owner
