"""TerminalConsumer: one browser WebSocket bridged to one ``pods/exec`` stream.

connect: check names, login, permission and the session limit → accept → open the Session row
→ in a task: wait briefly for the browser's size, open the exec (shell fallback), send
``ready``, then pump output to the browser until the process's Status arrives. Browser frames
arrive through ``receive``. A watchdog ends idle and over-long sessions. Whichever side ends
first, everything else is closed and the Session row records why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import DatabaseError

from . import protocol, records
from .audit.commands import CommandExtractor, CommandLine
from .audit.recorder import RESIZE, STDIN, STDOUT, AuditUnavailable, Recorder, Stored
from .conf import get_config
from .impersonation import impersonation_headers
from .kube.clusters import ClusterUnavailable, Connection, UnknownCluster, get_cluster
from .kube.exec import (
    ExecStatus,
    ExecStream,
    KubernetesError,
    Output,
    exec_path,
    get_json,
    open_exec,
)
from .models import Session
from .permissions import ExecTarget, may_exec
from .protocol import Ack, CloseCode, ProtocolError, Resize, Stdin

logger = logging.getLogger(__name__)

# How long to wait for the browser's size before starting the shell without it.
SIZE_WAIT = 2.0
# A shell that has printed nothing this long after the exec opened is taken as running;
# a missing one is reported by the cluster within milliseconds.
SHELL_SETTLE = 1.0
# Output read ahead of the browser at most: room for several group commits in flight, which
# keeps the store busy, and a bound on a session's memory when the browser stops reading.
UNDELIVERED_LIMIT = 4 * 1024 * 1024
# Committed output sent to the browser in one message at most.
SEND_CHUNK = 64 * 1024
# How long a closing session may take to commit its last frames.
RECORDER_FLUSH = 10.0

END_REASONS = {
    CloseCode.NORMAL: Session.EndReason.EXIT,
    CloseCode.BAD_REQUEST: Session.EndReason.PROTOCOL_ERROR,
    CloseCode.FRAME_TOO_LARGE: Session.EndReason.PROTOCOL_ERROR,
    CloseCode.NOT_FOUND: Session.EndReason.NOT_FOUND,
    CloseCode.IDLE: Session.EndReason.IDLE,
    CloseCode.MAX_DURATION: Session.EndReason.MAX_DURATION,
    CloseCode.ENDED_BY_AUDITOR: Session.EndReason.ENDED_BY_AUDITOR,
    CloseCode.UPSTREAM_FAILED: Session.EndReason.UPSTREAM_FAILED,
    CloseCode.AUDIT_UNAVAILABLE: Session.EndReason.AUDIT_UNAVAILABLE,
}


# Watchers are told about new output at most this often; they read the frames from the store.
NOTIFY_INTERVAL = 0.1
AUDIT_DOWN = "The audit store cannot be written, so the session was stopped."


def terminal_group(session_id: Any) -> str:
    """The channel-layer group of a running terminal (snapshot requests, terminate)."""
    return f"terminals.session.{session_id}"


def watchers_group(session_id: Any) -> str:
    """The channel-layer group of a session's watchers (progress, ended)."""
    return f"terminals.watchers.{session_id}"


# Refusals written down as DeniedAttempt records.
DENIALS = {CloseCode.BAD_REQUEST, CloseCode.NOT_AUTHENTICATED, CloseCode.FORBIDDEN}


class EndSession(Exception):
    """Raised inside the session's tasks to end it with a close code and a message."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TerminalConsumer(AsyncWebsocketConsumer):
    """Bridges a browser terminal to a shell in a pod; see the module docstring."""

    session: Session | None = None
    recorder: Recorder | None = None

    async def connect(self) -> None:
        self.config = get_config()
        self.ended = False
        self.tasks: list[asyncio.Task[None]] = []
        self.http: aiohttp.ClientSession | None = None
        self.stream: ExecStream | None = None
        self.size: tuple[int, int] | None = None
        self.size_known = asyncio.Event()
        self.exec_up = asyncio.Event()
        self.early_stdin: deque[bytes] = deque()
        self.early_stdin_bytes = 0
        self.sent = 0  # output bytes sent to the browser
        self.acked = 0  # output bytes the browser says it has processed
        self.window_open = asyncio.Event()
        # Output in reading order, each with its commit's future; the exit status last.
        self.outbox: deque[tuple[bytes, asyncio.Future[Stored]] | ExecStatus] = deque()
        self.outbox_ready = asyncio.Event()
        # Output read from the pod and not yet sent to the browser; the pump waits while it is
        # over UNDELIVERED_LIMIT, so a browser that stops acknowledging stops the reading too.
        self.undelivered = 0
        self.outbox_space = asyncio.Event()
        self.extractor = CommandExtractor()
        self.delivered_seq = -1  # the last output frame delivered (and fed to the screen)
        self.last_notify = 0.0
        self.ended_by: tuple[int | None, str] | None = None
        loop = asyncio.get_running_loop()
        self.started = self.last_activity = loop.time()

        # Refusals go after accept(), as an error message and a close code, so the page can
        # say why; a refused handshake would only show "connection failed".
        await self.accept()
        self.target = self._target_from_scope()
        self.impersonation: list[tuple[str, str]] = []
        try:
            invalid = self.target.invalid_reason()
            if invalid:
                raise EndSession(CloseCode.BAD_REQUEST, invalid)
            user = self.scope.get("user")
            if user is None or not user.is_authenticated:
                raise EndSession(CloseCode.NOT_AUTHENTICATED, "Log in to open a terminal.")
            try:
                get_cluster(self.target.cluster)
            except UnknownCluster:
                raise EndSession(
                    CloseCode.NOT_FOUND, f"There is no cluster called {self.target.cluster!r}."
                ) from None
            if not await self._may_exec(self.target):
                raise EndSession(
                    CloseCode.FORBIDDEN, f"You may not open a terminal on {self.target}."
                )
            try:
                self.session = await self._open_session()
            except DatabaseError as exc:
                logger.error("Cannot open a session record: %r", exc)
                raise EndSession(
                    CloseCode.AUDIT_UNAVAILABLE,
                    "The audit store is unavailable, so no terminal can open.",
                ) from exc
            if self.session is None:
                raise EndSession(
                    CloseCode.TOO_MANY_SESSIONS,
                    f"You have {self.config['MAX_SESSIONS_PER_USER']} terminals open already; "
                    "close one first.",
                )
        except EndSession as end:
            if end.code in DENIALS:
                await self._record_denial(self.target, end.code, end.message)
            await self._end(end.code, end.message)
            return
        self.recorder = Recorder(self.session.pk)
        await self.channel_layer.group_add(terminal_group(self.session.pk), self.channel_name)
        self._start(self._run())
        self._start(self._forward_output())
        self._start(self._watchdog())

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.ended:
            return
        try:
            message = protocol.decode_client_frame(
                text_data, bytes_data, self.config["MAX_FRAME_SIZE"]
            )
        except ProtocolError as error:
            await self._end(error.code, error.message)
            return
        if isinstance(message, Ack):
            self.acked = min(self.sent, self.acked + message.bytes)
            self.window_open.set()
            return
        self.last_activity = asyncio.get_running_loop().time()
        try:
            if isinstance(message, Resize):
                size = f"{message.cols}x{message.rows}".encode()
                if not await self._audit(RESIZE, size):
                    return
                self.size = (message.cols, message.rows)
                self.size_known.set()
                self.extractor.resize(message.cols, message.rows)
                if self.exec_up.is_set() and self.stream is not None:
                    await self.stream.send_resize(message.cols, message.rows)
            elif isinstance(message, Stdin):
                recorder = self.recorder
                if recorder is None:
                    return
                offset = recorder.offset_us()
                if not await self._audit(STDIN, message.data):
                    return
                self._extract(lambda: self.extractor.stdin(message.data, offset))
                await self._stdin(message.data)
        except (aiohttp.ClientError, ConnectionError):
            # The exec is going away; the output pump sees it and ends the session.
            logger.debug("Write to the exec of session %s failed", self._session_id())

    async def disconnect(self, code: int) -> None:
        if not self.ended and self.session is not None:
            self.ended = True
            await self._cleanup()
            await self._close_session(Session.EndReason.CLIENT_CLOSED, None, f"WebSocket {code}")
        else:
            await self._cleanup()
        if self.session is not None:
            await self.channel_layer.group_discard(
                terminal_group(self.session.pk), self.channel_name
            )

    # Messages from the channel layer.

    async def terminal_terminate(self, event: dict[str, Any]) -> None:
        """An auditor ended the session (``terminal.terminate``)."""
        self.ended_by = (event.get("user_id"), str(event.get("username", "")))
        await self._end(
            CloseCode.ENDED_BY_AUDITOR, f"{event.get('username', 'An auditor')} ended this session."
        )

    async def terminal_snapshot(self, event: dict[str, Any]) -> None:
        """A watcher asks for the current screen (``terminal.snapshot``)."""
        screen = self.extractor.screen
        await self.channel_layer.send(
            event["reply_to"],
            {
                "type": "watch.snapshot",
                "screen": screen.render(),
                "cols": screen.screen.columns,
                "rows": screen.screen.lines,
                "seq": self.delivered_seq,
            },
        )

    # The session's work.

    async def _run(self) -> None:
        try:
            first = await self._start_exec()
            await self._pump_output(first)
        except EndSession as end:
            await self._end(end.code, end.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Terminal session %s failed", self._session_id())
            await self._end(CloseCode.UPSTREAM_FAILED, "The terminal failed; see the server log.")

    async def _start_exec(self) -> asyncio.Future[Output | ExecStatus]:
        """Open the exec (trying each shell), send ``ready`` and release early stdin."""
        connection = await self._connection()
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        container = self.target.container or await self._default_container(connection)
        if not self.target.container:
            resolved = dataclasses.replace(self.target, container=container)
            if not await self._may_exec(resolved):
                message = f"You may not open a terminal on {resolved}."
                await self._record_denial(resolved, CloseCode.FORBIDDEN, message)
                raise EndSession(CloseCode.FORBIDDEN, message)
        try:
            await asyncio.wait_for(self.size_known.wait(), SIZE_WAIT)
        except TimeoutError:
            pass  # A client that sends no size gets the cluster's default.
        candidates = (
            [[self.target.command]]
            if self.target.command
            else [[shell] for shell in self.config["SHELLS"]]
        )
        for number, command in enumerate(candidates, start=1):
            stream = await self._open(connection, container, command)
            applied = self.size
            if applied:
                await stream.send_resize(*applied)
            first: asyncio.Future[Output | ExecStatus] = asyncio.ensure_future(stream.receive())
            await asyncio.wait({first}, timeout=SHELL_SETTLE)
            if first.done() and isinstance(first.result(), ExecStatus):
                status = first.result()
                assert isinstance(status, ExecStatus)
                if status.executable_not_found:
                    await stream.close()
                    if number < len(candidates):
                        continue
                    tried = ", ".join(c[0] for c in candidates)
                    raise EndSession(
                        CloseCode.UPSTREAM_FAILED,
                        f"No shell to run in container {container}: tried {tried}.",
                    )
            break
        self.stream = stream
        await self._mark_running(container, command)
        await self.send(
            text_data=protocol.ready_message(str(self._session_id()), container, command)
        )
        while self.early_stdin:
            await stream.send_stdin(self.early_stdin.popleft())
        if self.size and self.size != applied:
            await stream.send_resize(*self.size)
        self.exec_up.set()
        return first

    async def _pump_output(self, first: asyncio.Future[Output | ExecStatus]) -> None:
        """Read output and queue it for the audit store, until the process's Status arrives.

        ``submit`` waits while too much is uncommitted, so a slow store slows this read.
        """
        assert self.stream is not None and self.recorder is not None
        event = await first
        while isinstance(event, Output):
            try:
                done = await self.recorder.submit(STDOUT, event.data)
            except AuditUnavailable:
                raise EndSession(CloseCode.AUDIT_UNAVAILABLE, AUDIT_DOWN) from None
            self.outbox.append((event.data, done))
            self.outbox_ready.set()
            self.undelivered += len(event.data)
            while self.undelivered > UNDELIVERED_LIMIT and not self.ended:
                self.outbox_space.clear()
                await self.outbox_space.wait()
            event = await self.stream.receive()
        self.outbox.append(event)
        self.outbox_ready.set()

    async def _forward_output(self) -> None:
        """Deliver output once it is committed, in order; then the exit.

        Output frames already committed are sent together, up to ``SEND_CHUNK`` bytes: a PTY
        hands out about 4 KiB per read, and one WebSocket message each would cost Daphne most
        of its time.
        """
        try:
            while True:
                while not self.outbox:
                    self.outbox_ready.clear()
                    await self.outbox_ready.wait()
                item = self.outbox.popleft()
                if isinstance(item, ExecStatus):
                    await self._finish(item)
                    return
                data, done = item
                parts, size = [data], len(data)
                stored = await done
                while self.outbox:
                    following = self.outbox[0]
                    if isinstance(following, ExecStatus):
                        break
                    more, more_done = following
                    if not more_done.done() or size + len(more) > SEND_CHUNK:
                        break
                    self.outbox.popleft()
                    stored = more_done.result()
                    parts.append(more)
                    size += len(more)
                payload = b"".join(parts) if len(parts) > 1 else data
                await self._deliver(payload)
                self.undelivered -= len(payload)
                self.outbox_space.set()
                # A watcher's snapshot covers whole rows only; rows of merged output end later.
                self.delivered_seq = stored.seq if stored.last_in_row else stored.seq - 1
                self._extract(functools.partial(self.extractor.output, payload))
                await self._notify_watchers()
        except AuditUnavailable:
            await self._end(CloseCode.AUDIT_UNAVAILABLE, AUDIT_DOWN)
        except EndSession as end:
            await self._end(end.code, end.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Delivering output of session %s failed", self._session_id())
            await self._end(CloseCode.UPSTREAM_FAILED, "The terminal failed; see the server log.")

    async def _notify_watchers(self, final: bool = False) -> None:
        """Tell watchers there is more to read: throttled, never one message per frame."""
        loop = asyncio.get_running_loop()
        if not final and loop.time() - self.last_notify < NOTIFY_INTERVAL:
            return
        self.last_notify = loop.time()
        assert self.session is not None
        await self.channel_layer.group_send(
            watchers_group(self.session.pk),
            {"type": "watch.ended" if final else "watch.progress", "seq": self.delivered_seq},
        )

    async def _deliver(self, data: bytes) -> None:
        """Send output, holding back while the browser has too much unprocessed."""
        while self.sent - self.acked >= self.config["OUTPUT_BUFFER"]:
            self.window_open.clear()
            await self.window_open.wait()
        self.last_activity = asyncio.get_running_loop().time()
        self.sent += len(data)
        await self.send(bytes_data=data)

    async def _finish(self, status: ExecStatus) -> None:
        """The process ended: say how, then close normally."""
        if status.code is None:
            message = status.message or "The connection to the cluster was lost."
            raise EndSession(CloseCode.UPSTREAM_FAILED, message)
        if self.ended:
            return
        self.ended = True
        # The record is complete before the browser hears that the session is over.
        await self._cleanup(keep=asyncio.current_task())
        await self._close_session(Session.EndReason.EXIT, status.code, "")
        await self.send(text_data=protocol.exit_message(status.code))
        await self.close(code=int(CloseCode.NORMAL))

    async def _watchdog(self) -> None:
        """End the session when it has been idle or open too long."""
        loop = asyncio.get_running_loop()
        idle_limit, duration_limit = self.config["IDLE_TIMEOUT"], self.config["MAX_DURATION"]
        while not self.ended:
            now = loop.time()
            if now - self.started >= duration_limit:
                await self._end(
                    CloseCode.MAX_DURATION,
                    f"The session reached its maximum of {duration_limit} s.",
                )
                return
            if now - self.last_activity >= idle_limit:
                await self._end(CloseCode.IDLE, f"No input or output for {idle_limit} s.")
                return
            wake = min(self.started + duration_limit, self.last_activity + idle_limit)
            await asyncio.sleep(max(wake - now, 0.05))

    def _extract(self, find: Callable[[], list[CommandLine]]) -> None:
        """Record the command lines ``find`` returns; its failure never harms the terminal."""
        try:
            commands = find()
        except Exception:
            logger.exception("Command extraction failed in session %s", self._session_id())
            return
        if self.recorder is not None:
            self.recorder.add_commands(commands)

    async def _audit(self, direction: str, data: bytes) -> bool:
        """Commit a browser frame before it goes anywhere; end the session if that fails."""
        if self.recorder is None:
            return False
        try:
            await self.recorder.record(direction, data)
        except AuditUnavailable:
            await self._end(CloseCode.AUDIT_UNAVAILABLE, AUDIT_DOWN)
            return False
        return True

    async def _stdin(self, data: bytes) -> None:
        if self.exec_up.is_set() and self.stream is not None:
            await self.stream.send_stdin(data)
            return
        # Typed before the shell is up: hold it, within reason.
        self.early_stdin_bytes += len(data)
        if self.early_stdin_bytes > self.config["MAX_FRAME_SIZE"]:
            await self._end(
                CloseCode.FRAME_TOO_LARGE, "Too much input before the terminal was ready."
            )
            return
        self.early_stdin.append(data)

    # Ending.

    async def _end(self, code: CloseCode, message: str) -> None:
        """Stop everything, record why, then tell the browser and close with ``code``; once."""
        if self.ended:
            return
        self.ended = True
        logger.info("Terminal session %s ends: %s %s", self._session_id(), int(code), message)
        await self._cleanup(keep=asyncio.current_task())
        if self.session is not None:
            reason = END_REASONS.get(code, Session.EndReason.SERVER_ERROR)
            await self._close_session(reason, None, message)
        try:
            await self.send(text_data=protocol.error_message(code, message))
            await self.close(code=int(code))  # Daphne wants a plain int
        except Exception:  # The browser may be gone already; the record above still counts.
            logger.debug("Could not tell the browser why session %s ended", self._session_id())

    async def _cleanup(self, keep: asyncio.Task[Any] | None = None) -> None:
        """Cancel the tasks, close the exec and its HTTP session, flush the recorder."""
        for task in self.tasks:
            if task is not keep and not task.done():
                task.cancel()
        self.window_open.set()
        self.outbox_space.set()
        if self.stream is not None and not self.stream.closed:
            await self.stream.close()
        if self.http is not None and not self.http.closed:
            await self.http.close()
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            try:
                # Frames read but not delivered are still committed: the record keeps them.
                await asyncio.wait_for(recorder.close(), RECORDER_FLUSH)
            except TimeoutError:
                recorder.abandon()

    def _start(self, coroutine: Any) -> None:
        self.tasks.append(asyncio.create_task(coroutine))

    # Talking to the cluster.

    async def _connection(self) -> Connection:
        cluster = get_cluster(self.target.cluster)
        try:
            # Loading a kubeconfig or running a credential plugin blocks: use a thread.
            return await sync_to_async(cluster.connection, thread_sensitive=False)()
        except ClusterUnavailable as exc:
            logger.warning("%s", exc)
            raise EndSession(CloseCode.UPSTREAM_FAILED, "The cluster is not configured.") from exc

    async def _default_container(self, connection: Connection) -> str:
        """The container kubectl would pick: the annotated default, else the first."""
        assert self.http is not None
        path = f"/api/v1/namespaces/{self.target.namespace}/pods/{self.target.pod}"
        try:
            pod = await get_json(
                self.http, connection, path, self._cluster_headers(), self.config["CONNECT_TIMEOUT"]
            )
        except KubernetesError as error:
            raise await self._refusal(error) from error
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EndSession(CloseCode.UPSTREAM_FAILED, "The cluster cannot be reached.") from exc
        metadata, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        if phase != "Running":
            raise EndSession(
                CloseCode.NOT_FOUND, f"Pod {self.target.pod} is not running (phase {phase})."
            )
        names = [container.get("name", "") for container in spec.get("containers") or []]
        default = (metadata.get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
        if default in names:
            return str(default)
        if not names:
            raise EndSession(CloseCode.NOT_FOUND, f"Pod {self.target.pod} has no containers.")
        return str(names[0])

    async def _open(self, connection: Connection, container: str, command: list[str]) -> ExecStream:
        assert self.http is not None
        path = exec_path(self.target.namespace, self.target.pod, command, container)
        timeout = self.config["CONNECT_TIMEOUT"]
        try:
            async with asyncio.timeout(timeout):
                return await open_exec(
                    self.http,
                    connection,
                    path,
                    self._cluster_headers(),
                    timeout,
                    self.config["KEEPALIVE"],
                )
        except KubernetesError as error:
            raise await self._refusal(error, container) from error
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            logger.warning("Exec to %s failed: %r", self.target, exc)
            raise EndSession(CloseCode.UPSTREAM_FAILED, "The cluster cannot be reached.") from exc

    async def _refusal(self, error: KubernetesError, container: str = "") -> EndSession:
        if error.http_status == 404 or (
            error.http_status == 400 and "is not valid for pod" in error.message
        ):
            return EndSession(CloseCode.NOT_FOUND, error.message or "No such pod or container.")
        message = f"The cluster refused: {error.message or error.reason}"
        if error.http_status in (401, 403):
            # Django allowed it but the cluster's RBAC did not: a denial all the same.
            target = dataclasses.replace(self.target, container=container or self.target.container)
            await self._record_denial(target, CloseCode.UPSTREAM_FAILED, message)
        return EndSession(CloseCode.UPSTREAM_FAILED, message)

    def _cluster_headers(self) -> list[tuple[str, str]]:
        """Extra headers for the API server: impersonation, if configured."""
        return self.impersonation

    # Reading the request.

    def _target_from_scope(self) -> ExecTarget:
        """What the URL asks for, not yet validated."""
        kwargs = self.scope["url_route"]["kwargs"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        return ExecTarget(
            cluster=kwargs["cluster"],
            namespace=kwargs["namespace"],
            pod=kwargs["pod"],
            container=(query.get("container") or [""])[0],
            command=(query.get("command") or [""])[0],
        )

    def _client_address(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    def _user_agent(self) -> str:
        for name, value in self.scope.get("headers", []):
            if name == b"user-agent":
                return str(value.decode("latin-1"))
        return ""

    def _session_id(self) -> Any:
        return self.session.pk if self.session is not None else None

    # Database work, in Channels' database thread.

    @database_sync_to_async
    def _may_exec(self, target: ExecTarget) -> bool:
        allowed = may_exec(self.scope["user"], target)
        if allowed:
            # Reads the user's groups: done here, in the database thread, once.
            self.impersonation = impersonation_headers(self.scope["user"])
        return allowed

    @database_sync_to_async
    def _record_denial(self, target: ExecTarget, code: CloseCode, message: str) -> None:
        try:
            records.record_denial(
                self.scope.get("user"),
                target,
                protocol.ERROR_WORDS[code],
                message,
                self._client_address(),
                self._user_agent(),
            )
        except DatabaseError:
            logger.exception("Could not record a denied attempt on %s", target)

    @database_sync_to_async
    def _open_session(self) -> Session | None:
        return records.open_session(
            self.scope["user"],
            self.target,
            self._client_address(),
            self._user_agent(),
            self.config["MAX_SESSIONS_PER_USER"],
            self.config["MAX_DURATION"],
        )

    @database_sync_to_async
    def _mark_running(self, container: str, command: list[str]) -> None:
        records.mark_running(self._session_id(), container, command)

    async def _close_session(self, reason: str, exit_code: int | None, message: str) -> None:
        """Record the end (who ended it, if an auditor did) and tell the watchers."""
        try:
            await database_sync_to_async(records.close_session)(
                self._session_id(), reason, exit_code, message, self.ended_by
            )
        except DatabaseError:
            logger.exception("Could not record the end of session %s", self._session_id())
        await self._notify_watchers(final=True)


class MalformedPathConsumer(AsyncWebsocketConsumer):
    """Answers a /ws/terminals/ address that is not cluster/namespace/pod, with 4400.

    Without it the router raises and the browser sees a bare handshake failure (HTTP 500).
    """

    async def connect(self) -> None:
        await self.accept()
        message = "Not a terminal address: expected /ws/terminals/<cluster>/<namespace>/<pod>/."
        await self._record(f"{message} Got {self.scope.get('path', '')[:300]!r}.")
        await self.send(text_data=protocol.error_message(CloseCode.BAD_REQUEST, message))
        await self.close(code=int(CloseCode.BAD_REQUEST))

    @database_sync_to_async
    def _record(self, reason: str) -> None:
        client = self.scope.get("client")
        records.record_denial(
            self.scope.get("user"),
            ExecTarget("", "", ""),
            protocol.ERROR_WORDS[CloseCode.BAD_REQUEST],
            reason,
            client[0] if client else None,
        )
