from django.urls import re_path

from . import ical, views, webhooks

app_name = "calendar_sync"

OWNED = [  # the member's own connection at /, a host object's shared one at /shared/<kind>/<id>/
    ("auth/(?P<provider>[a-z]+)", views.AuthorizationURLView, "authorize"),
    ("status", views.StatusView, "status"),
    ("calendars", views.CalendarsView, "calendars"),
    ("calendar", views.SelectCalendarView, "select-calendar"),
    ("disconnect", views.DisconnectView, "disconnect"),
    ("test", views.TestPushView, "test"),
    ("capabilities", views.CapabilitiesView, "capabilities"),
]
SHARED = r"^shared/(?P<kind>[a-z_]+)/(?P<owner_id>[A-Za-z0-9_-]{1,64})/"

urlpatterns = [
    re_path(r"^shared/?$", views.SharedListView.as_view(), name="shared"),
    re_path(SHARED + r"resync/?$", views.SharedResyncView.as_view(), name="shared-resync"),
    re_path(SHARED + r"connections/caldav/?$", views.CalDAVConnectView.as_view(), name="shared-connect-caldav"),
    *[re_path(SHARED + path + "/?$", view.as_view(), name=f"shared-{name}") for path, view, name in OWNED],
    *[re_path(f"^{path}/?$", view.as_view(), name=name) for path, view, name in OWNED],
    re_path(r"^auth/(?P<provider>[a-z]+)/callback/?$", views.CallbackView.as_view(), name="callback"),
    re_path(r"^auth/(?P<provider>[a-z]+)/complete/?$", views.CompleteView.as_view(), name="complete"),
    re_path(r"^connections/caldav/?$", views.CalDAVConnectView.as_view(), name="connect-caldav"),
    re_path(r"^connections/ics/?$", views.IcsConnectView.as_view(), name="connect-ics"),
    re_path(r"^busy/?$", views.BusyView.as_view(), name="busy"),
    re_path(r"^connections/?$", views.ConnectionsView.as_view(), name="connections"),
    re_path(r"^connections/(?P<pk>[0-9a-fA-F-]{36})/?$", views.ConnectionView.as_view(), name="connection"),
    re_path(r"^activity/?$", views.ActivityView.as_view(), name="activity"),
    re_path(r"^ical/?$", views.FeedView.as_view(), name="feed"),
    re_path(r"^ical/rotate/?$", views.FeedRotateView.as_view(), name="feed-rotate"),
    re_path(r"^push/(?P<provider>[a-z]+)/?$", webhooks.webhook, name="push"),
    re_path(r"^ical/(?P<secret>[A-Za-z0-9_-]{20,100})\.ics$", ical.feed_view, name="ical"),
]
