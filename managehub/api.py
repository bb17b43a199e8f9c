"""API plumbing for the whole host: JSON errors everywhere under /api/, safe parsing, bounded pagination."""
import logging
import re
from http import HTTPStatus

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from rest_framework import exceptions, pagination, parsers, throttling
from rest_framework.response import Response

from bookings.services import BookingError

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


class LoginThrottle(throttling.SimpleRateThrottle):
    """Sign-in attempts per client address and account name (REST_FRAMEWORK rate "login")."""

    scope = "login"

    def get_cache_key(self, request, view):
        username = str(request.data.get("username", ""))[:150].lower() if hasattr(request.data, "get") else ""
        return self.cache_format % {"scope": self.scope, "ident": f"{self.get_ident(request)}:{username}"}
