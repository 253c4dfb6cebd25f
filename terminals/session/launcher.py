"""Starting the shell: the container kubectl would pick, and the first shell that exists."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.utils.translation import gettext as _

from ..kube.exec import ExecStatus, Output
from ..protocol import CloseCode
from .ending import EndSession

# A shell that has printed nothing this long after the exec opened is taken as running;
# a missing one is reported by the cluster within milliseconds.
SHELL_SETTLE = 1.0


class ExecPort(Protocol):
    """What the session needs of a running exec (``ExecStream`` in production)."""

    async def receive(self) -> Output | ExecStatus: ...
    async def send_stdin(self, data: bytes) -> None: ...
    async def send_resize(self, cols: int, rows: int) -> None: ...
    async def close(self) -> None: ...


@dataclass
class Launched:
    """A running exec, the argv that runs, and its first read (already in flight)."""

    stream: ExecPort
    container: str
    command: list[str]
    first: asyncio.Future[Output | ExecStatus]
    size: tuple[int, int] | None  # the size applied before the first read
    containers: list[str] = field(default_factory=list)  # the pod's, for the page's switcher


def default_container(pod: dict[str, Any], pod_name: str) -> str:
    """The container kubectl would pick: the annotated default, else the first."""
    metadata, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase")
    if phase != "Running":
        raise EndSession(
            CloseCode.NOT_FOUND,
            _("Pod %(pod)s is not running (phase %(phase)s).") % {"pod": pod_name, "phase": phase},
        )
    names = [container.get("name", "") for container in spec.get("containers") or []]
    default = (metadata.get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
    if default in names:
        return str(default)
    if not names:
        raise EndSession(
            CloseCode.NOT_FOUND, _("Pod %(pod)s has no containers.") % {"pod": pod_name}
        )
    return str(names[0])


def container_names(pod: dict[str, Any]) -> list[str]:
    """The names of the pod's containers, in its spec's order."""
    spec = pod.get("spec") or {}
    return [str(container.get("name", "")) for container in spec.get("containers") or []]


class ShellLauncher:
    """Runs ``command``, or the first of ``shells`` that exists in the container."""

    def __init__(
        self,
        open_exec: Callable[[str, list[str]], Awaitable[ExecPort]],
        shells: list[str],
        settle: float = SHELL_SETTLE,
    ) -> None:
        self._open = open_exec
        self.shells = shells
        self.settle = settle

    async def launch(
        self, container: str, command: str, size: Callable[[], tuple[int, int] | None]
    ) -> Launched:
        """Open the exec; ``size()`` is the browser's size now, applied before the first read.

        A shell the container lacks ends at once with "executable file not found": the next
        is tried. Anything else (output, or nothing within ``settle``) means it runs.
        """
        candidates = [[command]] if command else [[shell] for shell in self.shells]
        for number, argv in enumerate(candidates, start=1):
            stream = await self._open(container, argv)
            first: asyncio.Future[Output | ExecStatus] | None = None
            try:
                applied = size()
                if applied:
                    await stream.send_resize(*applied)
                first = asyncio.ensure_future(stream.receive())
                await asyncio.wait({first}, timeout=self.settle)
            except BaseException:
                await _abandon(stream, first)
                raise
            if first.done() and not first.cancelled() and first.exception() is None:
                status = first.result()
                if isinstance(status, ExecStatus) and status.executable_not_found:
                    await stream.close()
                    if number < len(candidates):
                        continue
                    tried = ", ".join(c[0] for c in candidates)
                    raise EndSession(
                        CloseCode.UPSTREAM_FAILED,
                        _("No shell to run in container %(container)s: tried %(tried)s.")
                        % {"container": container, "tried": tried},
                    )
            return Launched(stream, container, argv, first, applied)
        raise AssertionError("unreachable: the loop returns or raises")


async def _abandon(stream: ExecPort, first: asyncio.Future[Any] | None) -> None:
    if first is not None:
        first.cancel()
    with contextlib.suppress(Exception):
        await stream.close()


class PodShell:
    """The exec side of one session: the container, its permission, the shell, the hang-up."""

    def __init__(
        self,
        upstream: Any,
        target: Any,
        shells: list[str],
        permitted: Callable[[Any], Awaitable[bool]],
        record_denial: Callable[[Any, CloseCode, str], Awaitable[None]],
    ) -> None:
        self.upstream = upstream
        self.target = target
        self._launcher = ShellLauncher(upstream.open, shells)
        self._permitted = permitted
        self._record_denial = record_denial

    async def launch(self, size: Callable[[], tuple[int, int] | None]) -> Launched:
        """Connect, pick and check the container, and start the shell."""
        await self.upstream.connect()
        container = self.target.container
        if container:
            # Only for the page's container list: the exec itself says if the pod is there.
            pod = await self.upstream.pod_or_none() or {}
        else:
            pod = await self.upstream.get_pod()
            container = default_container(pod, self.target.pod)
            # Rules may grant some containers only: ask again now that the name is known.
            resolved = dataclasses.replace(self.target, container=container)
            if not await self._permitted(resolved):
                message = _("You may not open a terminal on %(target)s.") % {"target": resolved}
                await self._record_denial(resolved, CloseCode.FORBIDDEN, message)
                raise EndSession(CloseCode.FORBIDDEN, message)
        launched = await self._launcher.launch(container, self.target.command, size)
        launched.containers = container_names(pod)
        return launched

    async def close(self) -> None:
        """Hang up: close every exec this session opened."""
        await self.upstream.close()
