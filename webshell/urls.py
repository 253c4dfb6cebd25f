"""URLs of the deployable project: the admin, login, logout, password change, and the terminals.

Django's ``django.contrib.auth.urls`` is not included whole: its password reset by e-mail would
let anyone who controls a user's mailbox (or intercepts the mail) into a shell on production
pods, past the login lockout, and would make the site send mail to any address on request.
An administrator sets a forgotten password in the admin or with ``manage.py changepassword``.

Single sign-on (``webshell/oidc.py``) adds ``oidc/authenticate/`` and ``oidc/callback/``; they
answer 404 unless ``WEBSHELL_OIDC_ISSUER`` is set. The login, logout and the admin's login are
its views, which behave as Django's own when it is off.
"""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import oidc

urlpatterns = [
    # With local login off, the admin's password form leads to the site's login page instead.
    path("admin/login/", oidc.admin_login),
    path("admin/", admin.site.urls),
    path("accounts/login/", oidc.LoginView.as_view(), name="login"),
    path("accounts/logout/", oidc.LogoutView.as_view(), name="logout"),
    path("oidc/authenticate/", oidc.AuthenticateView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", oidc.CallbackView.as_view(), name="oidc_authentication_callback"),
    # A logged-in user changes their own password (the old one is asked for).
    path(
        "accounts/password_change/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("", include("terminals.urls")),
]
