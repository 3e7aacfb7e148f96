from django.urls import path

from approvals import views

app_name = "approvals"
urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("new/", views.new_request, name="new"),
    path("decisions/", views.my_decisions, name="my_decisions"),
    path("requests/", views.my_requests, name="my_requests"),
    path("<int:pk>/", views.task_detail, name="detail"),
    path("<int:pk>/decide/", views.decide, name="decide"),
]
