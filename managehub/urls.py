from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.settings import api_settings

from bookings import pages
from managehub.api import LoginThrottle


class ObtainToken(ObtainAuthToken):
    """Username and password for an API token, throttled per client address against brute force."""

    throttle_classes = [LoginThrottle]
    parser_classes = api_settings.DEFAULT_PARSER_CLASSES  # ObtainAuthToken pins DRF's own; ours refuse deep nesting


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="calendar-integration"), name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("integrations/calendar", pages.calendar_integration, name="calendar-integration"),
    path("integrations/rooms", pages.rooms_integration, name="rooms-integration"),
    path("integrations/calendar/bookings/<uuid:pk>", pages.booking_link, name="booking-link"),
    path("integrations/calendar/bookings/<uuid:pk>/confirm", pages.confirm_booking, name="page-booking-confirm"),
    path("integrations/calendar/bookings/<uuid:pk>/cancel", pages.cancel_booking, name="page-booking-cancel"),
    path("admin/", admin.site.urls),
    path("api/auth/token/", ObtainToken.as_view(), name="api-token"),
    path("api/calendar-sync/", include("calendar_sync.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("bookings.urls")),
]
