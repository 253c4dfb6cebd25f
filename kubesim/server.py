"""The aiohttp application: routes, authentication, RBAC, API objects and exec upgrades."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from . import frames
from .config import ClusterConfig, Namespace, Pod
from .frames import Subprotocol
from .process import Sandbox, prepare_sandbox
from .rbac import AccessError, Attributes, Authenticator, Authorizer, Identity
from .resources import (
    ContinueExpired,
    Resources,
    now,
    paginate,
    parse_label_selector,
    wants_table,
)
from .session import ExecRequest, ExecSession, Transcript

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz"})
# Seconds to wait for the client's close reply; the real server does not wait at all.
CLOSE_TIMEOUT = 5.0

CONFIG = web.AppKey("config", ClusterConfig)
RESOURCES = web.AppKey("resources", Resources)
AUTHN = web.AppKey("authn", Authenticator)
AUTHZ = web.AppKey("authz", Authorizer)
SANDBOXES: web.AppKey[dict[tuple[str, str, str], Sandbox]] = web.AppKey("sandboxes", dict)
TRANSCRIPT = web.AppKey("transcript", Transcript)
SESSIONS: web.AppKey[set[ExecSession]] = web.AppKey("sessions", set)
IDENTITY = web.RequestKey("identity", Identity)


class ApiError(AccessError):
    """Any failed request, answered with a Status body."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, details)
        self.code = code
        self.reason = reason


def not_found(resource: str, name: str) -> ApiError:
    """``pods "x" not found``."""
    return ApiError(
        404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource}
    )


def bad_request(message: str) -> ApiError:
    """A 400 BadRequest Status."""
    return ApiError(400, "BadRequest", message)


def json_response(obj: Any, status: int = 200) -> web.Response:
    """A JSON body as the API server writes it."""
    return web.Response(body=frames.dumps(obj), status=status, content_type="application/json")


def status_response(exc: AccessError) -> web.Response:
    """A failed request as an HTTP response with a Status body."""
    return json_response(
        frames.api_status(exc.code, exc.reason, exc.message, exc.details), status=exc.code
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a Kubernetes Status."""
    try:
        return await handler(request)
    except AccessError as exc:
        return status_response(exc)
    except web.HTTPNotFound:
        return status_response(
            ApiError(404, "NotFound", "the server could not find the requested resource")
        )
    except web.HTTPMethodNotAllowed:
        return status_response(
            ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        )


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer-token authentication, then impersonation; the result is ``request[IDENTITY]``."""
    header = request.headers.get("Authorization")
    if request.path in PUBLIC_PATHS and header is None:
        request[IDENTITY] = Identity("system:anonymous", ("system:unauthenticated",))
        return await handler(request)
    identity = request.app[AUTHN].authenticate(header)
    request[IDENTITY] = request.app[AUTHZ].impersonate(
        identity,
        request.headers.get("Impersonate-User"),
        request.headers.getall("Impersonate-Group", []),
    )
    return await handler(request)


def _check(request: web.Request, attrs: Attributes) -> None:
    request.app[AUTHZ].check(request[IDENTITY], attrs)


def _wants_table(request: web.Request) -> bool:
    return wants_table(request.headers.get("Accept", ""))


def _pods_response(request: web.Request, pods: list[Pod], single: bool = False) -> web.Response:
    """Pods as a Table if asked for (``kubectl get``), else a PodList or one Pod.

    Lists come in chunks when the client gives a ``limit`` (kubectl asks for 500 at a time).
    """
    res = request.app[RESOURCES]
    if single:
        return json_response(
            res.pod_table(pods, now()) if _wants_table(request) else res.pod(pods[0])
        )
    try:
        chunk, metadata = paginate(
            pods,
            request.query.get("limit", ""),
            request.query.get("continue", ""),
            request.app[CONFIG].continue_expires_after,
        )
    except ContinueExpired as exc:
        raise ApiError(410, "Expired", str(exc)) from exc
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    if _wants_table(request):
        return json_response(res.pod_table(chunk, now(), metadata))
    return json_response(res.pod_list(chunk, metadata))


def _namespaces_response(
    request: web.Request, namespaces: list[Namespace], single: bool = False
) -> web.Response:
    """Namespaces as a Table if asked for, else a NamespaceList or one Namespace."""
    res = request.app[RESOURCES]
    if _wants_table(request):
        return json_response(res.namespace_table(namespaces, now()))
    return json_response(res.namespace(namespaces[0]) if single else res.namespace_list(namespaces))


def _select(request: web.Request, pods: list[Pod]) -> list[Pod]:
    text = request.query.get("labelSelector", "")
    if not text:
        return pods
    try:
        selector = parse_label_selector(text)
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    return [p for p in pods if selector(p.labels)]


# Discovery -------------------------------------------------------------------------------


async def version(request: web.Request) -> web.Response:
    """``GET /version``."""
    return json_response(request.app[RESOURCES].version())


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz`` and friends."""
    return web.Response(text="ok")


async def api(request: web.Request) -> web.Response:
    """``GET /api``."""
    return json_response(Resources.api_versions(request.host))


async def apis(request: web.Request) -> web.Response:
    """``GET /apis``."""
    return json_response(Resources.api_groups())


async def api_v1(request: web.Request) -> web.Response:
    """``GET /api/v1``."""
    return json_response(Resources.api_resources())


# Namespaces and pods ----------------------------------------------------------------------


async def list_namespaces(request: web.Request) -> web.Response:
    """``GET /api/v1/namespaces``."""
    _check(request, Attributes("list", "namespaces"))
    return _namespaces_response(request, list(request.app[CONFIG].namespaces))


async def get_namespace(request: web.Request) -> web.Response:
    """``GET /api/v1/namespaces/{ns}`` (authorized in that namespace, like the API server)."""
    name = request.match_info["ns"]
    _check(request, Attributes("get", "namespaces", namespace=name, name=name))
    ns = request.app[CONFIG].namespace(name)
    if ns is None:
        raise not_found("namespaces", name)
    return _namespaces_response(request, [ns], single=True)


async def list_all_pods(request: web.Request) -> web.Response:
    """``GET /api/v1/pods`` (all namespaces: needs list at the cluster scope)."""
    _check(request, Attributes("list", "pods"))
    return _pods_response(request, _select(request, request.app[CONFIG].pods()))


async def list_pods(request: web.Request) -> web.Response:
    """``GET /api/v1/namespaces/{ns}/pods``; an unknown namespace lists nothing, as upstream."""
    name = request.match_info["ns"]
    _check(request, Attributes("list", "pods", namespace=name))
    ns = request.app[CONFIG].namespace(name)
    return _pods_response(request, _select(request, list(ns.pods) if ns else []))


async def get_pod(request: web.Request) -> web.Response:
    """``GET /api/v1/namespaces/{ns}/pods/{name}``."""
    return _pods_response(request, [_find_pod(request, "get")], single=True)


def _find_pod(request: web.Request, verb: str, subresource: str | None = None) -> Pod:
    ns_name, name = request.match_info["ns"], request.match_info["name"]
    _check(request, Attributes(verb, "pods", namespace=ns_name, name=name, subresource=subresource))
    ns = request.app[CONFIG].namespace(ns_name)
    pod = ns.pod(name) if ns else None
    if pod is None:
        raise not_found("pods", name)
    return pod


# Exec -------------------------------------------------------------------------------------


def _container(pod: Pod, requested: str | None) -> str:
    if not requested:
        default = pod.annotations.get("kubectl.kubernetes.io/default-container")
        if len(pod.containers) == 1:
            return pod.containers[0].name
        if default and pod.container(default):
            return default
        names = " ".join(c.name for c in pod.containers)
        raise bad_request(
            f"a container name must be specified for pod {pod.name}, choose one of: [{names}]"
        )
    if pod.container(requested) is None:
        raise bad_request(f"container {requested} is not valid for pod {pod.name}")
    return requested


def _check_phase(pod: Pod) -> None:
    if pod.phase == "Pending":
        raise bad_request(f"pod {pod.name} does not have a host assigned")
    if pod.phase != "Running":
        raise bad_request(
            f"cannot exec into a container in a completed pod; current phase is {pod.phase}"
        )


def _check_upgrade(request: web.Request) -> None:
    upgrade = request.headers.get("Upgrade", "").strip().lower()
    if upgrade.startswith("spdy/"):
        raise bad_request(
            "SPDY/3.1 is not supported by this emulator (kubesim serves exec over WebSocket "
            "only); use kubectl >= 1.30 or set KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true"
        )
    if upgrade != "websocket" or "upgrade" not in request.headers.get("Connection", "").lower():
        raise bad_request("Upgrade request required")


async def exec_pod(request: web.Request) -> web.StreamResponse:
    """``GET|POST …/pods/{name}/exec``: validate in the API server's order, then upgrade."""
    pod = _find_pod(request, "create", "exec")
    query = request.query
    container = _container(pod, query.get("container"))
    _check_phase(pod)
    _check_upgrade(request)
    tty = frames.parse_bool(query.getall("tty", []))
    stdin = frames.parse_bool(query.getall("stdin", []))
    stdout = frames.parse_bool(query.getall("stdout", []))
    # "Access to exec with tty and stderr is not supported": tty forces stderr off.
    stderr = frames.parse_bool(query.getall("stderr", [])) and not tty
    if not (stdin or stdout or stderr):
        raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
    command = tuple(query.getall("command", []))
    if not command:
        raise bad_request("you must specify at least one command for the container")
    protocol = frames.select_subprotocol(
        frames.parse_subprotocols(request.headers.getall("Sec-WebSocket-Protocol", []))
    )
    if protocol is None:
        # x/net/websocket refuses a handshake it cannot serve with a bare 403.
        return web.Response(status=403)
    ws = web.WebSocketResponse(
        protocols=(protocol.value,) if protocol is not Subprotocol.NONE else (),
        autoping=True,
        compress=False,
        max_msg_size=0,
        timeout=CLOSE_TIMEOUT,
    )
    if not ws.can_prepare(request).ok:
        raise bad_request("Upgrade request required")
    await ws.prepare(request)
    exec_request = ExecRequest(
        exec_id=secrets.token_hex(32),
        identity=request[IDENTITY],
        namespace=pod.namespace,
        pod=pod.name,
        container=container,
        command=command,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        tty=tty,
        protocol=protocol,
    )
    logger.info(
        "exec %s: %s/%s[%s] %s by %s (tty=%s, %s)",
        exec_request.exec_id[:12],
        pod.namespace,
        pod.name,
        container,
        command[0],
        exec_request.identity.user,
        tty,
        protocol.value or "no subprotocol",
    )
    sandbox = request.app[SANDBOXES][(pod.namespace, pod.name, container)]
    session = ExecSession(ws, exec_request, sandbox, request.app[TRANSCRIPT])
    request.app[SESSIONS].add(session)
    try:
        await session.run()
    finally:
        request.app[SESSIONS].discard(session)
    return ws


# Application ------------------------------------------------------------------------------


async def _shutdown(app: web.Application) -> None:
    """Close every exec socket; each session then hangs up and reaps its process."""
    sessions: list[ExecSession] = [*app[SESSIONS]]
    if sessions:
        logger.info("closing %d exec session(s)", len(sessions))
        await asyncio.gather(*(s.abort() for s in sessions), return_exceptions=True)


async def _close_transcript(app: web.Application) -> None:
    app[TRANSCRIPT].close()


def create_app(
    config: ClusterConfig, state_dir: Path, transcript: Path | None = None
) -> web.Application:
    """Build the application for ``config``; container directories go under ``state_dir``."""
    app = web.Application(middlewares=[api_errors, authenticate])
    sandboxes = {
        (pod.namespace, pod.name, c.name): prepare_sandbox(c, pod.namespace, pod.name, state_dir)
        for pod in config.pods()
        for c in pod.containers
    }
    app[CONFIG] = config
    app[SANDBOXES] = sandboxes
    app[RESOURCES] = Resources(
        config, now(), {key: str(sb.workdir) for key, sb in sandboxes.items()}
    )
    app[AUTHN] = Authenticator.from_config(config)
    app[AUTHZ] = Authorizer(config.rules)
    app[TRANSCRIPT] = Transcript(transcript)
    app[SESSIONS] = set()
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_close_transcript)
    exec_path = "/api/v1/namespaces/{ns}/pods/{name}/exec"
    app.add_routes(
        [
            web.get("/version", version),
            *(web.get(p, healthz) for p in ("/healthz", "/livez", "/readyz")),
            web.get("/api", api),
            web.get("/apis", apis),
            web.get("/api/v1", api_v1),
            web.get("/api/v1/namespaces", list_namespaces),
            web.get("/api/v1/namespaces/{ns}", get_namespace),
            web.get("/api/v1/pods", list_all_pods),
            web.get("/api/v1/namespaces/{ns}/pods", list_pods),
            web.get("/api/v1/namespaces/{ns}/pods/{name}", get_pod),
            web.get(exec_path, exec_pod),
            web.post(exec_path, exec_pod),
        ]
    )
    return app
