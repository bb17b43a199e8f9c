from rest_framework.routers import DefaultRouter

from .api import BookingViewSet, WorkspaceViewSet

router = DefaultRouter()
router.register("workspaces", WorkspaceViewSet, basename="workspace")
router.register("bookings", BookingViewSet, basename="booking")
urlpatterns = router.urls
