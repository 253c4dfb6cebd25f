"""The test project's URLs are webshell's (login, logout, password change; no reset by e-mail)."""

from webshell.urls import urlpatterns

__all__ = ["urlpatterns"]
