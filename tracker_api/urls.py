"""URL configuration of a tracker server: the admin, the REST API and its schema."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from tracker_api.views import access, datasets, interchange, labeling, runs, samples

router = DefaultRouter()
# Both /api/runs/x and /api/runs/x/ (an artifact name must not need a slash after it).
router.trailing_slash = "/?"
router.include_root_view = False
# No ".json" suffix routes: an artifact named "model.bin" or "config.json" means the file.
router.include_format_suffixes = False
router.register("users", access.UserViewSet, basename="user")
router.register("tokens", access.TokenViewSet, basename="token")
router.register("projects", access.ProjectViewSet, basename="project")
router.register("memberships", access.MembershipViewSet, basename="membership")
router.register("samples/import", datasets.SampleImportViewSet, basename="sample-import")
router.register("samples", samples.SampleViewSet, basename="sample")
router.register("datasets", datasets.DatasetViewSet, basename="dataset")
router.register("dataset-versions", datasets.VersionViewSet, basename="dataset-version")
router.register("tasks", labeling.TaskViewSet, basename="task")
router.register("tasks", interchange.TaskLabelsViewSet, basename="task-labels")
router.register("annotations", labeling.AnnotationViewSet, basename="annotation")
router.register("predictions", labeling.PredictionViewSet, basename="prediction")
# Before RunViewSet: /api/runs/search/ is a route, not a run id (ids are hex).
router.register("runs", interchange.RunQueryViewSet, basename="run-query")
router.register("runs", runs.RunViewSet, basename="run")
router.register("runs", interchange.RunDetailViewSet, basename="run-detail")
router.register("label-studio", interchange.LabelStudioViewSet, basename="label-studio")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/", include(router.urls)),
]

handler404 = "tracker_api.views.errors.not_found"
handler500 = "tracker_api.views.errors.server_error"
