"""REST API: connect, callback, status, calendars, calendar selection, disconnect, feed, activity.

Provider-neutral: the provider is a URL segment checked against the registry. The connection
views serve two roots: the member's own (`/`) and a host object's shared calendar
(`/shared/<kind>/<id>/`, staff only).
"""

import hashlib
import logging
import re
import secrets
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.http import Http404, HttpResponseRedirect
from django.urls import reverse
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import APIException
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import AllowAny, IsAdminUser, IsAuthenticated
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from . import fetch, flows, oauth, reads, tasks, tokens
from .api import capabilities, connection, connections, shared_connections
from .conf import get_setting
from .exceptions import (
    AuthorizationLost,
    CalendarSyncError,
    ConfigurationError,
    NotConnected,
    PermanentError,
    TransientError,
    Undecryptable,
)
from .models import AccessLog, CalendarFeed
from .owners import Owner, resolve, shared_kinds
from .providers import PROVIDERS, get_provider
from .serializers import (
    APP_PASSWORD_HINT,
    AccessLogSerializer,
    AuthorizationURLSerializer,
    BusySerializer,
    CalDAVConnectSerializer,
    CalendarSerializer,
    CapabilitiesSerializer,
    CompleteSerializer,
    ConnectionChangeSerializer,
    ConnectionSerializer,
    DisconnectSerializer,
    ErrorSerializer,
    FeedSerializer,
    IcsConnectSerializer,
    SelectCalendarSerializer,
    SharedConnectionSerializer,
    StatusSerializer,
    TestPushSerializer,
)

#: The error shapes the endpoints may answer with (documented once; each view lists the ones it can give).
ERRORS = {
    code: OpenApiResponse(ErrorSerializer, description=text)
    for code, text in {
        400: "Bad input: the body names the field",
        401: "Not signed in, or the credentials are wrong (see WWW-Authenticate)",
        403: "Not allowed (including a failed CSRF check when signed in with a session cookie)",
        404: "Not found",
        409: "Not connected, needs reauthorization, not configured on this server (code `not_configured`), or a conflicting state",
        413: "Request body too large",
        415: "Unsupported request body media type",
        429: "Too many requests (see Retry-After)",
        502: "The calendar provider refused the request",
        503: "The calendar provider is unavailable (code `provider_unavailable`): try again later",
    }.items()
}


def errors(*codes):
    """The ERRORS entries for `codes`, for one view's `responses`."""
    return {code: ERRORS[code] for code in codes}


#: Providers members connect through OAuth (`auth/<provider>`); the others have their own endpoint.
OAUTH_PROVIDERS = [name for name in PROVIDERS if get_provider(name).oauth]

#: The `{provider}` path segment: a key of the provider registry; anything else is a 404.
PROVIDER_PARAMETER = OpenApiParameter(
    "provider",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    enum=OAUTH_PROVIDERS,
    description="Calendar provider connected through OAuth; other names are 404.",
)
#: A throttled answer says when to try again.
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[429],
    description="Seconds to wait before trying again.",
)

logger = logging.getLogger(__name__)


def error_response(code, detail, http_status):
    return Response({"code": code, "detail": detail}, status=http_status)


def provider_error_response(exc):
    """Map our error hierarchy to HTTP once, for every view."""
    if isinstance(exc, Undecryptable):  # the operator's log says what to do; the member is told nothing about keys
        return error_response(
            "unavailable",
            "This calendar connection can't be used at the moment; try again later, or disconnect it and connect again.",
            503,
        )
    if isinstance(exc, ConfigurationError):
        # 409, not 503: only the server's operator can fix it, so a client must not read it as "retry later".
        return error_response(exc.code if exc.code != "configuration" else "not_configured", str(exc), 409)
    if isinstance(exc, NotConnected):
        return error_response("not_connected", "Connect a calendar first.", 409)
    if isinstance(exc, AuthorizationLost):
        return error_response(
            "needs_reauth", "Reconnect your calendar: the provider no longer accepts this connection.", 409
        )
    if isinstance(exc, TransientError):
        return error_response("provider_unavailable", "The calendar provider is unavailable; try again shortly.", 503)
    return error_response(exc.code, str(exc), 502)


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


class ProviderCallThrottle(SimpleRateThrottle):
    """Requests that call the provider, per owner: a member, or a shared calendar's host object
    whichever of the staff asks (CALENDAR_SYNC["PROVIDER_CALL_THROTTLE_RATE"]), so that nobody
    can spend the project's provider quota for everyone. Every request counts, cached or not."""

    scope = "calendar_sync_provider_call"

    def get_rate(self):
        return get_setting("PROVIDER_CALL_THROTTLE_RATE")

    def get_cache_key(self, request, view):
        owner = view.owner  # 404 for an unknown owner
        # Shared owners by their object's own key, so that no spelling of an id gets a fresh count.
        if owner.is_member:
            ident = owner.id
        else:
            obj = resolve(owner)
            assert obj is not None  # view.owner answered 404 for an unknown owner
            ident = obj.pk
        digest = hashlib.sha256(f"{owner.kind}:{ident}".encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": digest}


class CallbackThrottle(ConnectThrottle):
    """The callback's limit, per flow (the state we signed), not per address: junk callbacks from an
    address spend only their own allowance, never that of a member's real one (a 429 there would
    lose their consent). Callbacks with a state we did not sign share one allowance per address."""

    scope = "calendar_sync_callback"

    def get_cache_key(self, request, view):
        flow = oauth.flow_id(request.query_params.get("state"))
        ident = f"flow:{flow}" if flow else f"address:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


#: The cookie that binds an OAuth flow to the browser that started it (see AuthorizationURLView).
FLOW_COOKIE = "calendar_sync_flow"
FLOW_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")


def flow_cookie_path():
    """The app's own URL root, wherever the host mounted it: the cookie reaches only its endpoints."""
    callback = reverse("calendar_sync:callback", kwargs={"provider": "p"})
    return callback[: callback.rindex("auth/")]


#: Anonymous requests answer 401 with this challenge when none of the host's authenticators offers one
#: (session-only hosts; DRF would answer 403). The scheme of the HTTP cookie-auth draft (draft-broyer-http-cookie-auth).
SESSION_CHALLENGE = 'Cookie realm="api"'


# The mixins below are only ever mixed into DRF views: type checkers see them as such.
if TYPE_CHECKING:
    from rest_framework.views import APIView as _APIView
else:
    _APIView = object


class SafeDefaultsMixin(_APIView):
    """What every app view decides for itself, whatever the host's REST_FRAMEWORK defaults say:
    members only (a view may widen or narrow it), anonymous → 401 with a challenge, errors as {"code", "detail"}."""

    permission_classes = [IsAuthenticated]

    def get_authenticate_header(self, request):
        """The first challenge any of the host's authenticators offers (DRF asks only the first)."""
        for authenticator in self.get_authenticators():
            header = authenticator.authenticate_header(request)
            if header:
                return header
        return SESSION_CHALLENGE

    def handle_exception(self, exc):
        if isinstance(exc, CalendarSyncError):
            logger.warning("calendar sync API error: %s (%s)", exc.code, type(exc).__name__)
            return provider_error_response(exc)
        response = super().handle_exception(exc)
        if (
            isinstance(exc, APIException)
            and not isinstance(exc.detail, (dict, list))
            and isinstance(response.data, dict)
        ):
            response.data.setdefault(
                "code", getattr(exc.detail, "code", None) or exc.default_code
            )  # the host's handler may give {"detail"} only
        return response


class BaseView(SafeDefaultsMixin, APIView):
    pass


class ProviderMixin(_APIView):
    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if kwargs.get("provider") not in OAUTH_PROVIDERS:
            raise Http404("Unknown calendar provider.")


class SharedRouteSchema(AutoSchema):
    """The schema of a connection view under /shared/{kind}/{owner_id}/: the same operation as the
    member's, plus the owner's path parameters, 403 (staff only) and 404 (no such owner). A view
    with throttles documents their 429 and Retry-After wherever it is served."""

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        if "{kind}" not in self.path:
            return parameters
        return [
            *parameters,
            OpenApiParameter(
                "kind",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                enum=sorted(shared_kinds()),
                description="Kind of host object.",
            ),
            OpenApiParameter(
                "owner_id",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                pattern=r"^[A-Za-z0-9_-]{1,64}$",
                description="The host object's id.",
            ),
        ]

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation and getattr(self.view, "throttle_classes", None):  # throttled: 429 with Retry-After
            operation["responses"].setdefault(
                "429",
                {
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    "description": ERRORS[429].description,
                    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": RETRY_AFTER.description}},
                },
            )
        if operation and "{kind}" in path:
            error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            responses = operation["responses"]
            responses.setdefault("403", {"content": error, "description": "Staff only"})
            missing = "No such owner (unknown kind or id)"
            responses["404"] = {
                "content": error,
                "description": f"{responses['404']['description']}; or {missing.lower()}"
                if "404" in responses
                else missing,
            }
        return operation


class OwnedView(BaseView):
    """One connection's view: the member's own, or under /shared/<kind>/<id>/ a host object's (staff only)."""

    schema = SharedRouteSchema()

    def get_permissions(self):
        return [IsAdminUser()] if "kind" in self.kwargs else super().get_permissions()

    @property
    def owner(self):
        if "kind" not in self.kwargs:
            return Owner.member(self.request.user)
        owner = Owner(self.kwargs["kind"], self.kwargs["owner_id"])
        if owner.kind not in shared_kinds() or resolve(owner) is None:
            raise Http404("No such owner.")
        return owner

    def token(self):
        return self.owner.token()

    @property
    def reason(self):
        """Why the provider is called, for the access log: the member's own request, or staff's."""
        return AccessLog.Reason.MEMBER_REQUEST if "kind" not in self.kwargs else AccessLog.Reason.STAFF_REQUEST


class AuthorizationURLView(ProviderMixin, OwnedView):
    """Start connecting: returns the provider's consent URL for the current member.

    Also sets the flow cookie (HttpOnly, SameSite=Lax, Secure over https, as long as a state
    lives): the callback completes only in the browser carrying it. A browser that already has
    one keeps it, so flows started in two tabs both complete.
    """

    serializer_class = AuthorizationURLSerializer
    throttle_classes = [ConnectThrottle]

    @extend_schema(
        parameters=[
            PROVIDER_PARAMETER,
            OpenApiParameter(
                "add",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                enum=["1", "true", "0", "false"],
                description="`1` (or `true`): connect an additional account (members only). Without it (or with "
                "`0`/`false`) the account replaces the write connection. Any other value is a 400.",
            ),
            RETRY_AFTER,
        ],
        responses={
            200: AuthorizationURLSerializer,
            **errors(400, 401, 404, 429),
            409: OpenApiResponse(
                ErrorSerializer, description="The provider is not configured on this server (code `not_configured`)"
            ),
        },
    )
    def get(self, request, provider, **kwargs):
        browser = request.COOKIES.get(FLOW_COOKIE, "")
        if not FLOW_COOKIE_VALUE.fullmatch(browser):
            browser = secrets.token_urlsafe(32)
        flag = request.query_params.get("add", "")
        if flag not in ("", "1", "true", "0", "false"):
            return Response(
                {"code": "invalid", "detail": "add: use 1 (an additional account) or leave it out."}, status=400
            )
        add = flag in ("1", "true") and "kind" not in kwargs
        url = oauth.start_authorization(request.user, provider, self.owner, browser=browser, add=add)
        response = Response(AuthorizationURLSerializer({"authorization_url": url}).data)
        response.set_cookie(
            FLOW_COOKIE,
            browser,
            max_age=get_setting("STATE_MAX_AGE"),
            path=flow_cookie_path(),
            secure=request.is_secure(),
            httponly=True,
            samesite="Lax",
        )
        return response


class CallbackView(ProviderMixin, BaseView):
    """Where the provider sends the browser back. Always redirects to FRONTEND_URL.

    It completes only in the browser that started the flow (its flow cookie). Without the cookie
    (a frontend on another site, which never receives it) nothing is linked: the browser is sent
    on to the frontend with `calendar_sync=complete`, the provider, `code` and `state`, and the
    frontend finishes with the member's own credentials (CompleteView).
    """

    permission_classes = [AllowAny]
    serializer_class = None
    throttle_classes = [CallbackThrottle]

    @extend_schema(
        parameters=[
            PROVIDER_PARAMETER,
            OpenApiParameter(
                "state", OpenApiTypes.STR, description="The signed, single-use state from the consent URL."
            ),
            OpenApiParameter("code", OpenApiTypes.STR, description="The provider's authorization code."),
            OpenApiParameter(
                "error",
                OpenApiTypes.STR,
                description="Set by the provider when consent was not given (e.g. `access_denied`).",
            ),
            RETRY_AFTER,
        ],
        responses={
            302: OpenApiResponse(
                description="Redirect to FRONTEND_URL with calendar_sync=connected, calendar_sync=error&reason=<code>, "
                "or (no flow cookie) calendar_sync=complete&provider=<name>&code=<code>&state=<state> for the frontend to POST to .../complete"
            ),
            401: OpenApiResponse(ErrorSerializer, description="Credentials were sent and are wrong (none are needed)"),
            **errors(404, 429),
        },
    )
    def get(self, request, provider):
        params = request.query_params
        try:
            token = oauth.complete_authorization(
                params, request.user, provider, browser=request.COOKIES.get(FLOW_COOKIE, "")
            )
        except oauth.Unbound as exc:
            if params.get("error"):
                return self._redirect(exc.owner, calendar_sync="error", reason=oauth.provider_refusal(params).code)
            if not params.get("code"):
                return self._redirect(exc.owner, calendar_sync="error", reason="missing_code")
            return self._redirect(
                exc.owner, calendar_sync="complete", provider=provider, code=params["code"], state=params["state"]
            )
        except oauth.ConnectError as exc:
            logger.info("calendar connect failed: %s", exc.code)
            return self._forget_flow(self._redirect(exc.owner, calendar_sync="error", reason=exc.code), exc.consumed)
        except ConfigurationError as exc:
            logger.error("calendar connect misconfigured: %s", exc)
            return self._forget_flow(self._redirect(None, calendar_sync="error", reason="not_configured"), True)
        tasks.schedule(flows.connect(token))
        return self._forget_flow(
            self._redirect(Owner(token.owner_kind, token.owner_id), calendar_sync="connected"), True
        )

    @staticmethod
    def _forget_flow(response, consumed):
        """The flow this cookie proved is used up: clear the cookie (kept when it proved nothing here)."""
        if consumed:
            response.delete_cookie(FLOW_COOKIE, path=flow_cookie_path(), samesite="Lax")
        return response

    @staticmethod
    def _redirect(owner, **params):
        """Back to the configured page only (members': FRONTEND_URL; shared: SHARED_FRONTEND_URL), never a URL from the request."""
        page = get_setting("FRONTEND_URL")
        if owner is not None and not owner.is_member:
            page, params = get_setting("SHARED_FRONTEND_URL") or page, {**params, "owner": str(owner)}
        scheme, netloc, path, query, fragment = urlsplit(page or "/")
        query = urlencode([*parse_qsl(query), *params.items()])
        return HttpResponseRedirect(urlunsplit((scheme, netloc, path, query, fragment)))


#: POST .../complete: the HTTP status of each refusal (any other is 400, bad input).
COMPLETE_STATUSES = {
    "state_user_mismatch": 403,
    "forbidden": 403,
    "account_inactive": 403,
    "replayed_state": 409,
    "provider_unreachable": 502,
}


class CompleteView(ProviderMixin, BaseView):
    """Finish connecting with the member's own credentials: the frontend posts the `code` and `state`
    it was sent back with. Completes only the member's own flow (a staff member's, for a shared calendar)."""

    serializer_class = CompleteSerializer
    throttle_classes = [ConnectThrottle]

    @extend_schema(
        request=CompleteSerializer,
        parameters=[PROVIDER_PARAMETER, RETRY_AFTER],
        responses={
            200: OpenApiResponse(
                StatusSerializer,
                description="Connected: the connection's status (the member's, or the shared calendar's)",
            ),
            400: OpenApiResponse(
                ErrorSerializer,
                description="Bad input, or a state or code that is not valid (`invalid_state`, `expired_state`, `exchange_failed`, `missing_scopes`…)",
            ),
            401: ERRORS[401],
            403: OpenApiResponse(
                ErrorSerializer,
                description="The flow was started by someone else (`state_user_mismatch`), or they may no longer connect",
            ),
            **errors(404),
            409: OpenApiResponse(
                ErrorSerializer, description="The state was already used or has expired (`replayed_state`)"
            ),
            **errors(413, 415, 429, 502, 503),
        },
    )
    def post(self, request, provider):
        serializer = CompleteSerializer(data=request.data)
        if not serializer.is_valid():  # named in `detail`: a field called `code` cannot stand beside the error's `code`
            field, (problem, *_) = next(iter(serializer.errors.items()))
            kind = "missing" if problem.code in ("required", "blank", "null") else "invalid"
            return error_response(
                f"{kind}_{field}" if field in ("code", "state") else "invalid", f"{field}: {problem}", 400
            )
        try:
            token = oauth.complete_authorization(serializer.validated_data, request.user, provider)
        except oauth.ConnectError as exc:
            logger.info("calendar connect failed: %s", exc.code)
            return error_response(exc.code, str(exc), COMPLETE_STATUSES.get(exc.code, 400))
        tasks.schedule(flows.connect(token))
        return Response(StatusSerializer.of(connection(Owner(token.owner_kind, token.owner_id))).data)


class StatusView(OwnedView):
    serializer_class = StatusSerializer

    @extend_schema(responses={200: StatusSerializer, **errors(401)})
    def get(self, request, **kwargs):
        return Response(StatusSerializer.of(connection(self.owner)).data)


class CalendarsView(OwnedView):
    """The member's calendars they can write to (for the picker)."""

    serializer_class = CalendarSerializer
    throttle_classes = [ProviderCallThrottle]

    @extend_schema(responses={200: CalendarSerializer(many=True), **errors(401, 409, 502, 503)})
    def get(self, request, **kwargs):
        token = self.token()
        if token is None:
            return error_response("not_connected", "Connect a calendar first.", 409)
        calendars = tokens.calendars(token)
        rows = [
            {**c.__dict__, "selected": c.id == token.calendar_id or (c.primary and token.calendar_id == "primary")}
            for c in calendars
        ]
        return Response(CalendarSerializer(rows, many=True).data)


class SelectCalendarView(OwnedView):
    """Choose the calendar events go to; only ids from the member's writable calendars."""

    serializer_class = SelectCalendarSerializer
    throttle_classes = [ProviderCallThrottle]

    @extend_schema(
        request=SelectCalendarSerializer,
        responses={200: StatusSerializer, **errors(400, 401, 403, 409, 413, 415, 502, 503)},
    )
    def put(self, request, **kwargs):
        serializer = SelectCalendarSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            tasks.schedule(flows.change_calendar(self.owner, serializer.validated_data["calendar_id"], self.reason))
        except flows.UnknownCalendar:
            return Response(
                {
                    "code": "invalid",
                    "detail": "Not one of your writable calendars.",
                    "calendar_id": ["Not one of your writable calendars."],
                },
                status=400,
            )
        return Response(StatusSerializer.of(connection(self.owner)).data)


class DisconnectView(OwnedView):
    """Revoke and delete the connection. 204, or 200 saying why the revoke did not happen."""

    serializer_class = DisconnectSerializer

    @extend_schema(
        responses={
            204: OpenApiResponse(description="Revoked at the provider and deleted"),
            200: OpenApiResponse(
                DisconnectSerializer, description="Deleted here, but the provider did not confirm the revoke"
            ),
            **errors(401, 403),
            404: OpenApiResponse(ErrorSerializer, description="No calendar is connected (code `not_connected`)"),
            **errors(502),
        }
    )
    def delete(self, request, **kwargs):
        try:
            result = flows.disconnect(self.owner, self.reason)
        except NotConnected:
            return error_response("not_connected", "No calendar is connected.", 404)
        if result.revoked:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(DisconnectSerializer({"disconnected": True, "revoked": False, "reason": result.reason}).data)


class FeedView(BaseView):
    """The member's private iCal URL: GET shows it (null if none), POST creates it, DELETE turns it off."""

    serializer_class = FeedSerializer

    def _answer(self, request, feed, code=200):
        url = request.build_absolute_uri(reverse("calendar_sync:ical", args=[feed.secret])) if feed else None
        return Response(FeedSerializer({"url": url, "created_at": feed and feed.created_at}).data, status=code)

    @extend_schema(responses={200: FeedSerializer, **errors(401)})
    def get(self, request):
        return self._answer(request, CalendarFeed.objects.filter(user=request.user).first())

    @extend_schema(
        request=None,
        responses={
            201: OpenApiResponse(FeedSerializer, description="Created"),
            200: OpenApiResponse(FeedSerializer, description="Already on: the existing URL"),
            **errors(401, 403),
        },
    )
    def post(self, request):
        feed, created = CalendarFeed.get_or_issue(request.user)
        return self._answer(request, feed, 201 if created else 200)

    @extend_schema(responses={204: OpenApiResponse(description="Off (or was never on)"), **errors(401, 403)})
    def delete(self, request):
        CalendarFeed.objects.filter(user=request.user).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class FeedRotateView(BaseView):
    """A new secret URL; the old one answers 404 from now on. POST only."""

    serializer_class = FeedSerializer

    @extend_schema(request=None, responses={201: FeedSerializer, **errors(401, 403)})
    def post(self, request):
        return FeedView._answer(self, request, CalendarFeed.issue(request.user), 201)


class ActivityPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 200


class ActivityView(SafeDefaultsMixin, generics.ListAPIView):
    """The member's own access-log rows, newest first: every use of their stored token."""

    serializer_class = AccessLogSerializer
    pagination_class = ActivityPagination

    def get_queryset(self):
        return AccessLog.objects.filter(user=self.request.user).order_by("-created_at", "-id")

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "limit",
                OpenApiTypes.STR,
                description="Rows per page: a positive integer, at most 200 (larger is capped); anything else means 50.",
            ),
            OpenApiParameter(
                "offset",
                OpenApiTypes.STR,
                description="Index of the first row: a non-negative integer; anything else means 0.",
            ),
        ],
        responses={200: AccessLogSerializer(many=True), **errors(401)},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class SharedListView(BaseView):
    """Every shared connection (staff only): owner, provider, calendar, status, errors, counts, who connected it."""

    permission_classes = [IsAdminUser]
    serializer_class = SharedConnectionSerializer

    @extend_schema(responses={200: SharedConnectionSerializer(many=True), **errors(401, 403)})
    def get(self, request):
        return Response(SharedConnectionSerializer(shared_connections(), many=True).data)


class SharedResyncView(OwnedView):
    """Push every upcoming object of a shared calendar again (the same backfill that runs on connect)."""

    serializer_class = None

    @extend_schema(request=None, responses={202: OpenApiResponse(description="Queued"), **errors(401, 403, 404, 409)})
    def post(self, request, kind, owner_id):
        try:
            tasks.schedule(flows.resync(self.owner))
        except NotConnected:
            return error_response("not_connected", "No calendar is connected.", 409)
        return Response({"queued": True}, status=status.HTTP_202_ACCEPTED)


WINDOW = [
    OpenApiParameter(
        "start",
        OpenApiTypes.DATETIME,
        OpenApiParameter.QUERY,
        required=True,
        description="ISO 8601 start of the window, 1900-01-01 to 2999-12-31 (UTC).",
    ),
    OpenApiParameter(
        "end",
        OpenApiTypes.DATETIME,
        OpenApiParameter.QUERY,
        required=True,
        description="ISO 8601 end; at most BUSY_MAX_DAYS (90) after start, by 2999-12-31 (UTC).",
    ),
]


class BusyView(OwnedView):
    """The member's busy times in a window, from every connection that counts for conflicts (read in
    parallel, briefly cached; one that fails is named in `errors`). Never called on confirm."""

    serializer_class = BusySerializer
    throttle_classes = [ProviderCallThrottle]

    @extend_schema(parameters=WINDOW, responses={200: BusySerializer, **errors(400, 401, 409, 503)})
    def get(self, request, **kwargs):
        try:
            start, end = reads.parse_window(request.query_params.get("start"), request.query_params.get("end"))
        except ValueError as exc:
            field, _, detail = str(exc).partition(": ")
            return Response({"code": "invalid", "detail": detail, field: [detail]}, status=400)
        return Response(BusySerializer(reads.busy(self.owner, start, end)).data)


class TestPushView(OwnedView):
    """Write a short test event to the connection's calendar and remove it: {"ok": true} or the classified error."""

    serializer_class = TestPushSerializer
    throttle_classes = [ProviderCallThrottle]

    @extend_schema(request=None, responses={200: TestPushSerializer, **errors(401, 403, 404, 409, 502, 503)})
    def post(self, request, **kwargs):
        return Response(TestPushSerializer(flows.test(self.owner, self.reason)).data)


class CapabilitiesView(OwnedView):
    """What the connected write calendar can do now, for the booking form to offer only what will work:
    {"conference": ["google_meet"] | ["teams"] | [], "guests": bool}. Not connected: nothing."""

    serializer_class = CapabilitiesSerializer

    @extend_schema(responses={200: CapabilitiesSerializer, **errors(401, 403)})
    def get(self, request, **kwargs):
        return Response(CapabilitiesSerializer(capabilities(self.owner)).data)


class ConnectionsView(BaseView):
    """The member's calendar connections: which one bookings go to, which count for conflicts."""

    serializer_class = ConnectionSerializer

    @extend_schema(responses={200: ConnectionSerializer(many=True), **errors(401)})
    def get(self, request):
        return Response(ConnectionSerializer(connections(Owner.member(request.user)), many=True).data)


CONNECTION_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The connection's id.")


class ConnectionView(BaseView):
    """One of the member's connections (404 for anyone else's). PATCH `{"write": true}` makes it
    where bookings go (the upcoming ones move to it), `{"conflicts": false}` leaves it out of busy
    times; DELETE disconnects it (when it was the write one, none is until the member picks one)."""

    serializer_class = ConnectionSerializer

    def _answer(self, pk):
        row = next((r for r in connections(Owner.member(self.request.user)) if str(r["id"]) == str(pk)), None)
        if row is None:
            raise Http404("No such calendar connection.")
        return Response(ConnectionSerializer(row).data)

    @extend_schema(parameters=[CONNECTION_ID], responses={200: ConnectionSerializer, **errors(401, 404)})
    def get(self, request, pk):
        return self._answer(pk)

    @extend_schema(
        parameters=[CONNECTION_ID],
        request=ConnectionChangeSerializer,
        responses={200: ConnectionSerializer, **errors(400, 401, 403, 404, 409, 413, 415)},
    )
    def patch(self, request, pk):
        serializer = ConnectionChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        owner, changes = Owner.member(request.user), serializer.validated_data
        try:
            if "conflicts" in changes:
                flows.set_conflicts(owner, pk, changes["conflicts"])
            if changes.get("write"):
                tasks.schedule(flows.make_write(owner, pk))
        except NotConnected:
            raise Http404("No such calendar connection.") from None
        except PermanentError as exc:  # read_only: an ICS link can't receive bookings
            return Response({"code": exc.code, "detail": str(exc)}, status=400)
        return self._answer(pk)

    @extend_schema(
        parameters=[CONNECTION_ID],
        responses={
            204: OpenApiResponse(description="Revoked at the provider and deleted"),
            200: OpenApiResponse(
                DisconnectSerializer, description="Deleted here, but the provider did not confirm the revoke"
            ),
            **errors(401, 403, 404),
        },
    )
    def delete(self, request, pk):
        try:
            result = flows.disconnect(Owner.member(request.user), pk=pk)
        except NotConnected:
            raise Http404("No such calendar connection.") from None
        if result.revoked:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(DisconnectSerializer({"disconnected": True, "revoked": False, "reason": result.reason}).data)


class ConnectWithAddressView(OwnedView):
    """Connecting a calendar from an address the member types (CalDAV, ICS): checked by connecting,
    so every refusal is a 400 naming the field, never a 500; the secret is never returned. Under
    /shared/<kind>/<id>/ staff connect a host object's calendar (it replaces the one it had)."""

    throttle_classes = [ConnectThrottle]
    field = "url"

    def refused(self, code, detail, field=None):
        field = field or self.field
        return Response({"code": code, "detail": f"{field}: {detail}", field: [detail]}, status=400)

    def connect(self, request, serializer_class, flow):
        serializer = serializer_class(data=request.data)
        if not serializer.is_valid():
            field, (problem, *_) = next(iter(serializer.errors.items()))
            return self.refused("invalid", str(problem), None if field == "non_field_errors" else field)
        owner = self.owner
        try:
            token, work = flow(owner, request.user, **serializer.validated_data)
        except fetch.RefusedAddress as exc:
            return self.refused(exc.code, str(exc))
        except AuthorizationLost:
            return self.invalid_credentials()
        except TransientError as exc:
            logger.info("calendar connect: %s unreachable (%s)", self.field, exc.code)
            return self.refused("unreachable", "The server could not be reached; check the address or try again.")
        except PermanentError as exc:
            return self.refused(exc.code, str(exc))
        tasks.schedule(work)
        row = next(r for r in connections(owner) if str(r["id"]) == str(token.pk))
        return Response(ConnectionSerializer(row).data, status=201)

    def invalid_credentials(self):
        return self.refused("invalid_credentials", "The server refused the sign-in.")


CONNECT_ERRORS = {
    201: OpenApiResponse(ConnectionSerializer, description="Connected: the new connection (as in `connections/`)"),
    400: OpenApiResponse(
        ErrorSerializer,
        description="Refused, naming the field: `invalid`, `invalid_url`, `insecure_url` (not https), "
        "`private_address` (loopback, private or link-local), `too_many_redirects`, `unreachable`, "
        "`invalid_credentials` (CalDAV), `link_gone` (ICS), `no_calendar`, `invalid_calendar`, `too_large`…",
    ),
    **errors(401, 403, 413, 415, 429),
}


class CalDAVConnectView(ConnectWithAddressView):
    """Connect Apple iCloud (`"preset": "icloud"`, with an app-specific password) or any CalDAV server."""

    serializer_class = CalDAVConnectSerializer
    field = "server_url"

    @extend_schema(request=CalDAVConnectSerializer, parameters=[RETRY_AFTER], responses=CONNECT_ERRORS)
    def post(self, request, **kwargs):
        return self.connect(request, CalDAVConnectSerializer, self.flow)

    @staticmethod
    def flow(owner, user, server_url, username, password, preset=None):
        return flows.connect_caldav(owner, user, server_url, username, password)

    def invalid_credentials(self):
        return Response(
            {
                "code": "invalid_credentials",
                "detail": f"password: The server refused this user name and password. {APP_PASSWORD_HINT}",
                "password": ["The server refused this user name and password."],
            },
            status=400,
        )


class IcsConnectView(ConnectWithAddressView):
    """Connect an ICS link (read-only: it counts for conflicts)."""

    serializer_class = IcsConnectSerializer
    field = "url"

    @extend_schema(request=IcsConnectSerializer, parameters=[RETRY_AFTER], responses=CONNECT_ERRORS)
    def post(self, request, **kwargs):
        return self.connect(request, IcsConnectSerializer, flows.connect_ics)

    def invalid_credentials(self):
        """401, 403, 404 or 410: the link was withdrawn or reset."""
        return self.refused("link_gone", "The link answered that it is no longer valid; copy it again.")
