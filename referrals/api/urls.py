"""Routes of the integration API (shared/API.md), mounted under /api/v1/."""
from django.urls import path, re_path

from . import tracking, views

app_name = "api"

urlpatterns = [
    path("events", views.EventsView.as_view(), name="events"),
    path("accounts/<str:account>", views.AccountView.as_view(), name="account"),
    path("accounts/<str:account>/stats", views.AccountStatsView.as_view(), name="account-stats"),
    path("accounts/<str:account>/earnings", views.AccountEarningsView.as_view(), name="account-earnings"),
    path("accounts/<str:account>/referrals", views.AccountReferralsView.as_view(), name="account-referrals"),
    path("accounts/<str:account>/track", views.AccountTrackView.as_view(), name="account-track"),
    path("templates/<str:template>", views.TemplateView.as_view(), name="template"),
    path("applications", views.ApplicationListView.as_view(), name="applications"),
    path("applications/<int:application_id>/approve", views.ApplicationApproveView.as_view(),
         name="application-approve"),
    path("applications/<int:application_id>/reject", views.ApplicationRejectView.as_view(),
         name="application-reject"),
    path("jobs/run", views.JobsRunView.as_view(), name="jobs-run"),
    path("track/click", tracking.TrackClickView.as_view(), name="track-click"),
    path("clicks", tracking.ClicksView.as_view(), name="clicks"),
    # [\s\S], not ".": an id holding a newline (%0A) must reach the JSON 404 too.
    re_path(r"^[\s\S]*$", views.NotFoundView.as_view(), name="not-found"),
]
