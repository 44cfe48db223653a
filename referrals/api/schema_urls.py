"""The live OpenAPI 3 schema of the integration API and its interactive docs (Swagger UI
served from the drf-spectacular-sidecar static files, no CDN)."""
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="api-schema"),
    # The split view serves its start-up script as a separate request: the CSP forbids inline scripts.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema", authentication_classes=[],
                                                      permission_classes=[]), name="api-docs"),
]
