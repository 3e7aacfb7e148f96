from django.urls import path, re_path

from monitoring import views

app_name = "monitoring"
RUN = r"executions/(?P<workflow_id>.+)/(?P<run_id>[0-9A-Za-z-]{1,64})"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("executions/", views.executions, name="executions"),
    path("retries/", views.retries, name="retries"),
    path("stuck/", views.stuck, name="stuck"),
    path("pending/", views.pending, name="pending"),
    path("trends/", views.trends, name="trends"),
    path("ready-filters/", views.ready_filters, name="ready_filters"),
    path("batch/", views.batch, name="batch"),
    path("batch/run/", views.batch_run, name="batch_run"),
    path("batch/jobs/", views.batch_jobs, name="batch_jobs"),
    path("batch/jobs/<str:job_id>/", views.batch_job, name="batch_job"),
    re_path(rf"^{RUN}/act/$", views.act, name="act"),
    re_path(rf"^{RUN}/queries/$", views.execution_queries, name="queries"),
    re_path(rf"^{RUN}/query/$", views.run_query, name="query"),
    re_path(rf"^{RUN}/$", views.execution_detail, name="execution"),
]
