"""The live OpenAPI 3 schema of the integration API and its interactive docs (Swagger UI
served from the drf-spectacular-sidecar static files, no CDN)."""
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema", authentication_classes=[],
                                                 permission_classes=[]), name="api-docs"),
]
