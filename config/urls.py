from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from config import views
from monitoring import views as monitoring_views

urlpatterns = [
    path("", views.home),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The reference workflows' start page sits under /approvals/ for its users; its code lives
    # beside the workflows it starts (workflows/reference/).
    path("approvals/start/", include("workflows.reference.urls")),
    path("approvals/", include("approvals.urls")),
    path("monitoring/", include("monitoring.urls")),
    path("metrics", monitoring_views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
]

handler500 = "config.errors.server_error"
