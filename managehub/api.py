"""API plumbing for the whole host: JSON errors everywhere under /api/, safe parsing, bounded pagination."""

import json
import logging
import re
from http import HTTPStatus

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
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
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)) and not getattr(
        exc, "auth_header", None
    ):
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
        code = (
            codes
            if isinstance(codes, str)
            else "invalid"
            if isinstance(exc, exceptions.ValidationError)
            else exc.default_code
        )
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
        response.data.setdefault(
            "detail", "Invalid input." if code == "invalid" else HTTPStatus(response.status_code).phrase
        )
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
    """Every error under /api/ is JSON with a `code` and a `detail`, whatever produced it (404 for
    unknown paths, CSRF 403, 400 for too many fields, 405, 413, 500, a view's own 400) and whatever
    DEBUG says. JSON bodies keep their fields and gain a missing `code` or `detail`; a 500 never
    carries a traceback."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        try:
            request.GET  # noqa: B018 - parsed here, once: a refusal raised later escapes Django's debug page too
        except SuspiciousOperation as exc:
            return self.process_exception(request, exc)
        response = self.get_response(request)
        if response.status_code < 400:
            return response
        status = response.status_code
        known = status in HTTPStatus._value2member_map_
        code = re.sub(r"[^a-z]+", "_", HTTPStatus(status).phrase.lower()).strip("_") if known else "error"
        detail = HTTPStatus(status).phrase if known else "Error"
        if status == 500:
            body = {"code": "server_error", "detail": "Internal server error."}
        elif response.get("Content-Type", "").startswith("application/json"):
            body = _json_body(response)
            if isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("detail"), str):
                return response
            body = _with_code_and_detail(body, *(("invalid", "Invalid input.") if status == 400 else (code, detail)))
        else:
            body = {"code": code, "detail": detail}
        new = JsonResponse(body, status=status)
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in response:
                new[header] = response[header]
        return new

    def process_exception(self, request, exc):
        """A request Django refuses as suspicious (too many fields or files, a broken body) is a
        JSON 400 here, before Django's debug page (which reads the same query string again) runs."""
        if not request.path.startswith(API_PREFIX) or not isinstance(exc, SuspiciousOperation):
            return None
        logging.getLogger(f"django.security.{type(exc).__name__}").error(str(exc))
        if isinstance(exc, RequestDataTooBig):
            return JsonResponse({"code": "too_large", "detail": "Request body too large."}, status=413)
        if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
            return JsonResponse({"code": "too_many_fields", "detail": "Too many fields in the request."}, status=400)
        return JsonResponse({"code": "bad_request", "detail": "Bad request."}, status=400)


def _json_body(response):
    if getattr(response, "streaming", False):
        return None
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _with_code_and_detail(body, code, detail):
    """`body` (a view's own error JSON) with string `code` and `detail`; a field error filed under
    either name (a field called `code`) moves into `detail`."""
    if not isinstance(body, dict):
        return {"code": code, "detail": detail}
    body, messages = dict(body), []
    for key, default in (("code", code), ("detail", detail)):
        if not isinstance(body.get(key), str):
            if body.get(key) is not None:
                messages.append(
                    f"{key}: {'; '.join(map(str, body[key])) if isinstance(body[key], list) else body[key]}"
                )
            body[key] = default
    if messages:
        body["detail"] = " ".join(messages)
    return body


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
            400: OpenApiResponse(
                ErrorSerializer, description="Missing fields, or wrong username or password (code `invalid`)"
            ),
            **{code: ERRORS[code] for code in (401, 403, 413, 415, 429)},
        }

        @extend_schema(
            auth=[{"tokenAuth": []}, {"cookieAuth": []}, {}],
            parameters=[RETRY_AFTER],
            request=AuthTokenSerializer,
            responses={
                200: inline_serializer(
                    "AuthTokenResponse", {"token": serializers.CharField(), "expiry": serializers.DateTimeField()}
                ),
                **errors,
            },
        )
        class Fixed(self.target):
            pass

        return Fixed
