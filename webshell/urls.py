"""URLs of the deployable project: the admin, login and logout, and the terminals app."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("terminals.urls")),
]
