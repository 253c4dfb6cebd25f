"""HTTP routes of the terminals app; include them at the site root or under a prefix."""

from django.urls import path

from . import views

app_name = "terminals"

urlpatterns = [
    path("", views.portal, name="portal"),
    path("terminals/<str:cluster>/<str:namespace>/<str:pod>/", views.terminal, name="terminal"),
]
