from django.urls import re_path

from . import ical, views

app_name = "calendar_sync"

urlpatterns = [
    re_path(r"^auth/(?P<provider>[a-z]+)/?$", views.AuthorizationURLView.as_view(), name="authorize"),
    re_path(r"^auth/(?P<provider>[a-z]+)/callback/?$", views.CallbackView.as_view(), name="callback"),
    re_path(r"^status/?$", views.StatusView.as_view(), name="status"),
    re_path(r"^calendars/?$", views.CalendarsView.as_view(), name="calendars"),
    re_path(r"^calendar/?$", views.SelectCalendarView.as_view(), name="select-calendar"),
    re_path(r"^disconnect/?$", views.DisconnectView.as_view(), name="disconnect"),
    re_path(r"^activity/?$", views.ActivityView.as_view(), name="activity"),
    re_path(r"^ical/?$", views.FeedView.as_view(), name="feed"),
    re_path(r"^ical/rotate/?$", views.FeedRotateView.as_view(), name="feed-rotate"),
    re_path(r"^ical/(?P<secret>[A-Za-z0-9_-]{20,100})\.ics$", ical.feed_view, name="ical"),
]
