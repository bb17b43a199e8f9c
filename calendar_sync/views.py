"""REST API: connect, callback, status, calendars, calendar selection, disconnect, feed, activity.

Provider-neutral: the provider is a URL segment checked against the registry.
"""
import logging
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from . import oauth, tasks
from .conf import get_setting
from .exceptions import AuthorizationLost, CalendarSyncError, ConfigurationError, TransientError
from .models import AccessLog, CalendarFeed, CalendarToken, SyncRecord
from .providers import PROVIDERS
from .serializers import (
    AccessLogSerializer,
    AuthorizationURLSerializer,
    CalendarSerializer,
    DisconnectSerializer,
    ErrorSerializer,
    FeedSerializer,
    SelectCalendarSerializer,
    StatusSerializer,
)

#: The error shapes every endpoint may answer with (documented once, used by every view).
ERRORS = {
    code: OpenApiResponse(ErrorSerializer, description=text)
    for code, text in {
        400: "Bad input: the body names the field",
        401: "Not signed in",
        403: "Not allowed",
        404: "Not found",
        409: "Not connected, needs reauthorization, or a conflicting state",
        413: "Request body too large",
        429: "Too many requests (see Retry-After)",
        503: "Not configured, or the calendar provider is unavailable",
    }.items()
}

logger = logging.getLogger(__name__)


def error_response(code, detail, http_status):
    return Response({"code": code, "detail": detail}, status=http_status)


def provider_error_response(exc):
    """Map our error hierarchy to HTTP once, for every view."""
    if isinstance(exc, ConfigurationError):
        return error_response(exc.code if exc.code != "configuration" else "not_configured", str(exc), 503)
    if isinstance(exc, AuthorizationLost):
        return error_response("needs_reauth", "Reconnect your calendar: the provider no longer accepts this connection.", 409)
    if isinstance(exc, TransientError):
        return error_response("provider_unavailable", "The calendar provider is unavailable; try again shortly.", 503)
    return error_response(exc.code, str(exc), 502)


def _token_or_none(user):
    return CalendarToken.objects.filter(user=user).first()


class ConnectThrottle(SimpleRateThrottle):
    """Per user (or client address) limit on starting a connection: CALENDAR_SYNC["CONNECT_THROTTLE_RATE"]."""

    scope = "calendar_sync_connect"

    def get_rate(self):
        return get_setting("CONNECT_THROTTLE_RATE")

    def get_cache_key(self, request, view):
        user = request.user
        if user and user.is_authenticated:  # the account, even if a primary key is ever reused
            ident = f"{user.pk}:{getattr(user, 'date_joined', '') and user.date_joined.timestamp()}"
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class BaseView(APIView):
    def handle_exception(self, exc):
        if isinstance(exc, CalendarSyncError):
            logger.warning("calendar sync API error: %s (%s)", exc.code, type(exc).__name__)
            return provider_error_response(exc)
        return super().handle_exception(exc)


class ProviderMixin:
    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if kwargs.get("provider") not in PROVIDERS:
            raise Http404("Unknown calendar provider.")


class AuthorizationURLView(ProviderMixin, BaseView):
    """Start connecting: returns the provider's consent URL for the current member."""

    serializer_class = AuthorizationURLSerializer
    throttle_classes = [ConnectThrottle]

    @extend_schema(responses={200: AuthorizationURLSerializer, **ERRORS})
    def get(self, request, provider):
        url = oauth.start_authorization(request.user, provider)
        return Response(AuthorizationURLSerializer({"authorization_url": url}).data)


class CallbackView(ProviderMixin, BaseView):
    """Where the provider sends the browser back. Always redirects to FRONTEND_URL."""

    permission_classes = [AllowAny]
    serializer_class = None
    throttle_classes = [ConnectThrottle]

    @extend_schema(
        responses={302: OpenApiResponse(description="Redirect to FRONTEND_URL with calendar_sync=connected, or calendar_sync=error&reason=<code>")},
    )
    def get(self, request, provider):
        try:
            token = oauth.complete_authorization(request.query_params, request.user, provider)
        except oauth.ConnectError as exc:
            logger.info("calendar connect failed: %s", exc.code)
            return self._redirect(calendar_sync="error", reason=exc.code)
        except ConfigurationError as exc:
            logger.error("calendar connect misconfigured: %s", exc)
            return self._redirect(calendar_sync="error", reason="not_configured")
        transaction.on_commit(lambda: tasks.backfill_task.delay(token.user_id))
        return self._redirect(calendar_sync="connected")

    @staticmethod
    def _redirect(**params):
        scheme, netloc, path, query, fragment = urlsplit(get_setting("FRONTEND_URL") or "/")
        query = urlencode([*parse_qsl(query), *params.items()])
        return HttpResponseRedirect(urlunsplit((scheme, netloc, path, query, fragment)))


class StatusView(BaseView):
    serializer_class = StatusSerializer

    @extend_schema(responses={200: StatusSerializer, **ERRORS})
    def get(self, request):
        return Response(StatusSerializer.for_user(request.user).data)


class CalendarsView(BaseView):
    """The member's calendars they can write to (for the picker)."""

    serializer_class = CalendarSerializer

    @extend_schema(responses={200: CalendarSerializer(many=True), **ERRORS})
    def get(self, request):
        token = _token_or_none(request.user)
        if token is None:
            return error_response("not_connected", "Connect a calendar first.", 409)
        calendars = oauth.calendars(token)
        rows = [{**c.__dict__, "selected": c.id == token.calendar_id or (c.primary and token.calendar_id == "primary")} for c in calendars]
        return Response(CalendarSerializer(rows, many=True).data)


class SelectCalendarView(BaseView):
    """Choose the calendar events go to; only ids from the member's writable calendars."""

    serializer_class = SelectCalendarSerializer

    @extend_schema(request=SelectCalendarSerializer, responses={200: StatusSerializer, **ERRORS})
    def put(self, request):
        serializer = SelectCalendarSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = _token_or_none(request.user)
        if token is None:
            return error_response("not_connected", "Connect a calendar first.", 409)
        wanted = serializer.validated_data["calendar_id"]
        calendars = oauth.calendars(token)
        if wanted != "primary" and wanted not in {c.id for c in calendars}:
            return Response({"calendar_id": ["Not one of your writable calendars."]}, status=400)
        if wanted != token.calendar_id:
            CalendarToken.objects.filter(pk=token.pk).update(calendar_id=wanted)
            old = token.calendar_id
            transaction.on_commit(lambda: tasks.move_calendar_task.delay(request.user.pk, old))
        return Response(StatusSerializer.for_user(request.user).data)


class DisconnectView(BaseView):
    """Revoke and delete the connection. 204, or 200 saying why the revoke did not happen."""

    serializer_class = DisconnectSerializer

    @extend_schema(responses={204: None, 200: DisconnectSerializer, **ERRORS})
    def delete(self, request):
        token = CalendarToken.objects.defer(*CalendarToken.SECRET_FIELDS).filter(user=request.user).first()
        if token is None:
            return error_response("not_connected", "No calendar is connected.", 404)
        revoked, reason = oauth.disconnect(token)
        SyncRecord.objects.filter(user=request.user).exclude(state=SyncRecord.State.SYNCED).update(
            state=SyncRecord.State.NOT_CONNECTED
        )
        if revoked:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(DisconnectSerializer({"disconnected": True, "revoked": False, "reason": reason}).data)


class FeedView(BaseView):
    """The member's private iCal URL: GET shows it (null if none), POST creates it, DELETE turns it off."""

    serializer_class = FeedSerializer

    def _answer(self, request, feed, code=200):
        url = request.build_absolute_uri(reverse("calendar_sync:ical", args=[feed.secret])) if feed else None
        return Response(FeedSerializer({"url": url, "created_at": feed and feed.created_at}).data, status=code)

    @extend_schema(responses={200: FeedSerializer, **ERRORS})
    def get(self, request):
        return self._answer(request, CalendarFeed.objects.filter(user=request.user).first())

    @extend_schema(request=None, responses={201: FeedSerializer, 200: FeedSerializer, **ERRORS})
    def post(self, request):
        feed = CalendarFeed.objects.filter(user=request.user).first()
        return self._answer(request, feed) if feed else self._answer(request, CalendarFeed.issue(request.user), 201)

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request):
        CalendarFeed.objects.filter(user=request.user).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class FeedRotateView(BaseView):
    """A new secret URL; the old one answers 404 from now on. POST only."""

    serializer_class = FeedSerializer

    @extend_schema(request=None, responses={201: FeedSerializer, **ERRORS})
    def post(self, request):
        return FeedView._answer(self, request, CalendarFeed.issue(request.user), 201)


class ActivityPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 200


class ActivityView(generics.ListAPIView):
    """The member's own access-log rows, newest first: every use of their stored token."""

    serializer_class = AccessLogSerializer
    pagination_class = ActivityPagination

    def get_queryset(self):
        return AccessLog.objects.filter(user=self.request.user).order_by("-created_at", "-id")

    @extend_schema(responses={200: AccessLogSerializer(many=True), **ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
