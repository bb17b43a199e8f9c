# calendar_sync: added to the urls.py of `django-admin startproject`.
from django.urls import include

urlpatterns += [path("api/calendar-sync/", include("calendar_sync.urls"))]
