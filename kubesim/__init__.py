"""kubesim: an emulated Kubernetes API server for development, demos and tests.

It serves discovery, namespaces, pods (list/get, ``as=Table``) and ``pods/exec`` over
WebSocket (``v5.channel.k8s.io`` and older channel protocols) over TLS with bearer tokens,
impersonation and simple RBAC.  Its "pods" are processes of the host running in a PTY or
with pipes, so it binds to loopback unless told otherwise.

The wire protocol follows ``shared/reference/kube-exec-protocol.md``; its fidelity is checked
by the real ``kubectl`` binaries and the official Python client in ``tests/``.
"""

from __future__ import annotations

__version__ = "0.1.0"

# The Kubernetes version kubesim claims to be (``/version``); kubectl 1.27-1.33 accept it.
KUBE_VERSION = (1, 33, 1)
