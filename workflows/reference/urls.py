from django.urls import path

from workflows.reference import views

app_name = "reference"
urlpatterns = [
    path("", views.start_workflow, name="start"),
    path("<slug:kind>/", views.start_workflow_kind, name="start_kind"),
]
