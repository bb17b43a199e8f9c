from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from knox.views import LoginView
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.settings import api_settings

from bookings import pages
from managehub.signin import SIGN_IN_THROTTLES, throttle_sign_in


class ObtainToken(LoginView):
    """Username and password for an API token, throttled against brute force (managehub.signin).

    knox stores only the token's hash and gives it an expiry (REST_KNOX["TOKEN_TTL"]); the answer
    is `{"token", "expiry"}`. Signing in makes no session: the token is the credential.
    """

    permission_classes = ()
    throttle_classes = SIGN_IN_THROTTLES
    parser_classes = api_settings.DEFAULT_PARSER_CLASSES  # ours refuse deep nesting
    serializer_class = AuthTokenSerializer

    def post(self, request, format=None):
        serializer = self.serializer_class(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        request.user = serializer.validated_data["user"]
        return super().post(request, format)


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="calendar-integration"), name="home"),
    path("accounts/login/", throttle_sign_in(auth_views.LoginView.as_view()), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("integrations/calendar", pages.calendar_integration, name="calendar-integration"),
    path("integrations/rooms", pages.rooms_integration, name="rooms-integration"),
    path("integrations/calendar/bookings/new", pages.new_booking, name="page-booking-new"),
    path("integrations/calendar/bookings/<uuid:pk>", pages.booking_link, name="booking-link"),
    path("integrations/calendar/bookings/<uuid:pk>/confirm", pages.confirm_booking, name="page-booking-confirm"),
    path("integrations/calendar/bookings/<uuid:pk>/cancel", pages.cancel_booking, name="page-booking-cancel"),
    path("integrations/calendar/bookings/<uuid:pk>/move", pages.move_booking, name="page-booking-move"),
    path("integrations/calendar/bookings/<uuid:pk>/guests", pages.booking_guests, name="page-booking-guests"),
    path("integrations/calendar/series/<uuid:pk>/confirm", pages.confirm_series, name="page-series-confirm"),
    path("admin/login/", throttle_sign_in(admin.site.login)),  # before admin.site.urls, which has the same path
    path("admin/", admin.site.urls),
    path("api/auth/token/", ObtainToken.as_view(), name="api-token"),
    path("api/calendar-sync/", include("calendar_sync.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("bookings.urls")),
]
