"""API plumbing for the whole host: JSON errors everywhere under /api/, safe parsing, bounded pagination."""
import logging
import re
from http import HTTPStatus

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, JsonResponse
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import exceptions, pagination, parsers, serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.response import Response

from bookings.services import BookingError
from calendar_sync.serializers import ErrorSerializer

logger = logging.getLogger(__name__)
API_PREFIX = "/api/"
MAX_OFFSET = 2**31 - 1


def exception_handler(exc, context):
    """DRF's handler, plus lifecycle errors as 409/400, and a `code` and `detail` in every body."""
    from rest_framework.views import exception_handler as drf_exception_handler  # late: views reads these settings

    if isinstance(exc, RequestDataTooBig):
        exc = exceptions.APIException("Request body too large.")
        exc.status_code, exc.default_code = 413, "too_large"
        return _with_code(drf_exception_handler(exc, context), "too_large")
    # Django's own 404 and 403 (get_object_or_404, Http404 in a view) get a code like DRF's.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)) and not getattr(exc, "auth_header", None):
        _challenge(exc, context)
    if isinstance(exc, BookingError):
        http = 409 if exc.code in ("invalid_transition", "overlap") else 400
        body = {"detail": str(exc), "code": exc.code}
        if exc.field:
            body[exc.field] = [str(exc)]
        return Response(body, status=http)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "invalid" if isinstance(exc, exceptions.ValidationError) else exc.default_code
        return _with_code(response, code)
    return response


def _challenge(exc, context):
    """Missing or wrong credentials are a 401 with a challenge, not a 403.

    DRF takes the challenge from the first authenticator only, and session authentication has
    none, so it answers 403; any authenticator that has one (Token) makes it a proper 401.
    """
    request = context.get("request")
    for authenticator in getattr(request, "authenticators", None) or ():
        header = authenticator.authenticate_header(request)
        if header:
            exc.status_code, exc.auth_header = 401, header
            return


def _with_code(response, code):
    if isinstance(response.data, dict):
        response.data.setdefault("code", code)
        response.data.setdefault("detail", "Invalid input." if code == "invalid" else HTTPStatus(response.status_code).phrase)
    elif isinstance(response.data, list):
        response.data = {"code": code, "detail": "; ".join(str(d) for d in response.data)}
    return response


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, but absurdly nested input is a 400 like any malformed body (not a RecursionError)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None


class Pagination(pagination.LimitOffsetPagination):
    """Bounded limit and offset: no client-chosen number can overflow the database."""

    max_limit = 500

    def get_offset(self, request):
        return min(super().get_offset(request), MAX_OFFSET)

    def get_schema_operation_parameters(self, view):
        return pagination_parameters(self)


def pagination_parameters(paginator):
    """`limit` and `offset` as they really are: any value is accepted, and what is not a number in
    range falls back (DRF's lenient parsing), so the schema says string and the rules say the rest."""
    return [
        {
            "name": paginator.limit_query_param,
            "required": False,
            "in": "query",
            "description": f"Results per page: a positive integer, at most {paginator.max_limit} (larger is capped); "
            f"anything else means the default ({paginator.default_limit}).",
            "schema": {"type": "string"},
        },
        {
            "name": paginator.offset_query_param,
            "required": False,
            "in": "query",
            "description": "Index of the first result: a non-negative integer; anything else means 0.",
            "schema": {"type": "string"},
        },
    ]


class JsonErrorsMiddleware:
    """Every error under /api/ is JSON, whatever produced it (404 for unknown paths, CSRF 403,
    400 for too many fields, 405, 413, 500). Bodies that are already JSON pass untouched; a 500
    never carries a traceback."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith(API_PREFIX) or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json") and response.status_code != 500:
            return response
        status = response.status_code
        code = re.sub(r"[^a-z]+", "_", HTTPStatus(status).phrase.lower()).strip("_") if status in HTTPStatus._value2member_map_ else "error"
        body = {"code": code, "detail": HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"}
        if status == 500:
            body = {"code": "server_error", "detail": "Internal server error."}
        new = JsonResponse(body, status=status)
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in response:
                new[header] = response[header]
        return new


class TokenAuthentication(KnoxTokenAuthentication):
    """`Authorization: Token <token>` (django-rest-knox: hashed, expiring tokens). A token that is
    not printable ASCII is wrong like any other (401), never a decoding error or a NUL the
    database refuses (500)."""

    def authenticate_credentials(self, token):
        if not re.fullmatch(rb"[!-~]{1,256}", token):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(token)


class TokenScheme(KnoxTokenScheme):
    """The schema's `tokenAuth` scheme (`Authorization: Token <token>`), as before knox."""

    target_class = "managehub.api.TokenAuthentication"
    name = "tokenAuth"


class ObtainTokenSchema(OpenApiViewExtension):
    """The schema of `POST /api/auth/token/` (managehub.urls.ObtainToken) as it really answers:
    `{"token", "expiry"}` for good credentials, 400 for missing or wrong ones, 429 when throttled; no
    credentials needed (bad ones still fail authentication)."""

    target_class = "managehub.urls.ObtainToken"
    priority = 1

    def view_replacement(self):
        from calendar_sync.views import ERRORS, RETRY_AFTER

        errors = {
            400: OpenApiResponse(ErrorSerializer, description="Missing fields, or wrong username or password (code `invalid`)"),
            **{code: ERRORS[code] for code in (401, 403, 413, 415, 429)},
        }

        @extend_schema(
            auth=[{"tokenAuth": []}, {"cookieAuth": []}, {}],
            parameters=[RETRY_AFTER],
            request=AuthTokenSerializer,
            responses={
                200: inline_serializer("AuthTokenResponse", {"token": serializers.CharField(), "expiry": serializers.DateTimeField()}),
                **errors,
            },
        )
        class Fixed(self.target):
            pass

        return Fixed
