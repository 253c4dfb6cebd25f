"""HTTP routes of the terminals app; include them at the site root or under a prefix."""

from django.urls import path

from . import mfa, preferences, views

app_name = "terminals"

urlpatterns = [
    path("", views.portal, name="portal"),
    path("terminals/sessions/<uuid:session_id>.cast", views.session_cast, name="session-cast"),
    path(
        "terminals/sessions/<uuid:session_id>/replay/",
        views.session_replay,
        name="session-replay",
    ),
    path("terminals/sessions/<uuid:session_id>/watch/", views.session_watch, name="session-watch"),
    path("terminals/sessions/<uuid:session_id>/end/", views.session_end, name="session-end"),
    path("terminals/preferences/", preferences.preferences, name="preferences"),
    path("terminals/sessions/mine/", views.my_sessions, name="my-sessions"),
    path(
        "terminals/sessions/mine/<uuid:session_id>/end/",
        views.my_session_end,
        name="my-session-end",
    ),
    path("terminals/workspace/", views.workspace, name="workspace"),
    # The pages' scripts in the user's language (terminals/static/terminals/js/i18n.js).
    path("terminals/jsi18n/", views.javascript_catalog, name="javascript-catalog"),
    # The second factor and step-up (terminals.mfa).
    path("terminals/mfa/enrol/", mfa.enrol, name="mfa-enrol"),
    path("terminals/mfa/verify/", mfa.verify, name="mfa-verify"),
    path("terminals/mfa/recovery/", mfa.recovery, name="mfa-recovery"),
    path("terminals/reauth/", mfa.reauth, name="reauth"),
    # After the session pages, which it would otherwise shadow.
    path("terminals/<str:cluster>/<str:namespace>/<str:pod>/", views.terminal, name="terminal"),
]
