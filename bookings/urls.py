from rest_framework.routers import DefaultRouter

from .api import BookingViewSet, SeriesViewSet, WorkspaceViewSet

router = DefaultRouter()
router.register("workspaces", WorkspaceViewSet, basename="workspace")
router.register("bookings/series", SeriesViewSet, basename="series")  # before bookings/{id}/
router.register("bookings", BookingViewSet, basename="booking")
urlpatterns = router.urls
