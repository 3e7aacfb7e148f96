from django.urls import path

from approvals import admin_views, mail_views, views

app_name = "approvals"
urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("new/", views.new_request, name="new"),
    path("views/", views.save_view, name="save_view"),
    path("bulk/", views.bulk_decide, name="bulk"),
    path("bulk/<uuid:pk>/", views.bulk_result, name="bulk_result"),
    path("bulk/<uuid:pk>/progress/", views.bulk_progress, name="bulk_progress"),
    path("views/<int:pk>/delete/", views.delete_view, name="delete_view"),
    path("count/", views.pending_count, name="pending_count"),
    path("decisions/", views.my_decisions, name="my_decisions"),
    path("requests/", views.my_requests, name="my_requests"),
    path("<int:pk>/", views.task_detail, name="detail"),
    path("<int:pk>/decide/", views.decide, name="decide"),
    path("mail/<str:token>/", mail_views.mail_link, name="mail_link"),
    path("settings/", mail_views.mail_settings, name="settings"),
    path("<int:pk>/claim/", views.claim, name="claim"),
    path("<int:pk>/withdraw/", views.withdraw, name="withdraw"),
    path("<int:pk>/comment/", views.comment, name="comment"),
    path("away/", admin_views.out_of_office, name="away"),
    path("policies/", admin_views.policy_list, name="policies"),
    path("policies/new/", admin_views.policy_edit, name="policy_new"),
    path("policies/<int:pk>/", admin_views.policy_detail, name="policy_detail"),
    path("policies/<int:pk>/edit/", admin_views.policy_edit, name="policy_edit"),
    path("policies/<int:pk>/duplicate/", admin_views.policy_duplicate, name="policy_duplicate"),
    path("policies/<int:pk>/retire/", admin_views.policy_retire, name="policy_retire"),
    path("policies/<int:pk>/push/", admin_views.policy_push, name="policy_push"),
    path("routing/", admin_views.routing, name="routing"),
]
