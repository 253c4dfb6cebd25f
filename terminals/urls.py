"""HTTP routes of the terminals app; include them at the site root or under a prefix."""

from django.urls import path

from . import preferences, views

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
    # After the session pages, which it would otherwise shadow.
    path("terminals/<str:cluster>/<str:namespace>/<str:pod>/", views.terminal, name="terminal"),
]
