"""``TERMINALS["CLUSTERS"]`` from the environment (read by ``webshell/settings.py``).

- ``WEBSHELL_IN_CLUSTER=1``: one cluster, the pod's own, through its service account, named
  ``WEBSHELL_CLUSTER_NAME`` (default ``here``).
- ``KUBECONFIG``: every context of the kubeconfig becomes a cluster, named after the context,
  in the file's order. Several files joined with ``:`` are merged as kubectl merges them (the
  first file to name a context wins; missing files are skipped).

  - ``WEBSHELL_CLUSTERS``: only these contexts, in this order, comma-separated. An entry
    ``name=context`` gives the cluster another name than its context's: cluster names are
    DNS labels (they are in every terminal URL, access rule and audit record), and contexts
    named by cloud tools (``arn:aws:eks:…``, ``gke_project_zone_name``) are not.
  - ``WEBSHELL_CLUSTER_NAMES``: what the portal calls them, ``prod=Production,dev=Development``
    by cluster name; a cluster not named there is shown by its name.

- Neither: the kubesim sandbox that ``make run`` starts.

Deprecated: ``KUBE_CONTEXT`` and ``WEBSHELL_CLUSTER_NAME`` beside ``KUBECONFIG`` still give the
one cluster they gave before (the context ``KUBE_CONTEXT``, else the current one, named
``WEBSHELL_CLUSTER_NAME``, else ``default``), with a ``FutureWarning``; ``WEBSHELL_CLUSTERS``
replaces them (``WEBSHELL_CLUSTERS=default=my-context`` is the same cluster under the same name).

The contexts are read once, when the settings load; their credentials are loaded (and reloaded
when the file changes) by ``terminals.kube.clusters``. Anything wrong is an
``ImproperlyConfigured`` naming the variable, so a typo stops the server instead of hiding a
cluster.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import yaml
from django.core.exceptions import ImproperlyConfigured

# The rule the system checks apply (terminals.E004): a cluster name is a DNS label.
from terminals.checks import CLUSTER_NAME

SANDBOX_CONTEXT = "kubesim-webshell"

Clusters = dict[str, dict[str, object]]


def clusters_from_environment(environ: Mapping[str, str], sandbox_kubeconfig: Path) -> Clusters:
    """The clusters the web shell execs into, as ``TERMINALS["CLUSTERS"]`` wants them."""
    if _true(environ.get("WEBSHELL_IN_CLUSTER")):
        return {environ.get("WEBSHELL_CLUSTER_NAME") or "here": {"in_cluster": True}}
    kubeconfig = environ.get("KUBECONFIG", "")
    if not kubeconfig:
        # The web shell uses its own service identity in the sandbox, not the admin's.
        return {"kubesim": {"kubeconfig": str(sandbox_kubeconfig), "context": SANDBOX_CONTEXT}}
    if environ.get("KUBE_CONTEXT") or environ.get("WEBSHELL_CLUSTER_NAME"):
        return _deprecated_single_cluster(environ, kubeconfig)
    contexts = kubeconfig_contexts(kubeconfig)
    chosen = _chosen(environ.get("WEBSHELL_CLUSTERS", ""), contexts, kubeconfig)
    verbose = _verbose_names(environ.get("WEBSHELL_CLUSTER_NAMES", ""), chosen)
    return {
        name: {
            "kubeconfig": kubeconfig,
            "context": context,
            "verbose_name": verbose.get(name, name),
        }
        for name, context in chosen.items()
    }


def kubeconfig_contexts(kubeconfig: str) -> list[str]:
    """The context names of ``KUBECONFIG`` (one path or several joined with ``:``), in order.

    Read with the ``kubernetes`` package's own merger, the one that later loads each context,
    so that both agree on which file's context wins.
    """
    # Here: the kubernetes package takes a tenth of a second to import, needed only now.
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import KubeConfigMerger

    try:
        merged = KubeConfigMerger(kubeconfig).config
        if merged is None:
            raise ImproperlyConfigured(f"KUBECONFIG: no kubeconfig file at {kubeconfig}.")
        names = [str(context.value["name"]) for context in merged.value["contexts"]]
    except (ConfigException, OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ImproperlyConfigured(
            f"KUBECONFIG: cannot read the contexts of {kubeconfig}: {exc}"
        ) from None
    if not names:
        raise ImproperlyConfigured(f"KUBECONFIG: {kubeconfig} has no contexts.")
    return names


def _chosen(listed: str, contexts: list[str], kubeconfig: str) -> dict[str, str]:
    """Cluster name -> context: WEBSHELL_CLUSTERS's entries, else every context."""
    pairs = [_pair(entry) for entry in _entries(listed)] or [(c, c) for c in contexts]
    chosen: dict[str, str] = {}
    for name, context in pairs:
        if context not in contexts:
            raise ImproperlyConfigured(
                f"WEBSHELL_CLUSTERS: {kubeconfig} has no context {context!r}; "
                f"its contexts are {', '.join(contexts)}."
            )
        if not CLUSTER_NAME.fullmatch(name):
            raise ImproperlyConfigured(
                f"The cluster name {name!r} is not a DNS label (lower-case letters, digits and "
                "'-', at most 63): cluster names are in every terminal URL and audit record. "
                f"Name it in WEBSHELL_CLUSTERS (e.g. WEBSHELL_CLUSTERS=prod={context}) or "
                "rename the context (kubectl config rename-context)."
            )
        if name in chosen:
            raise ImproperlyConfigured(f"WEBSHELL_CLUSTERS: the cluster {name!r} is listed twice.")
        chosen[name] = context
    return chosen


def _pair(entry: str) -> tuple[str, str]:
    """``context`` or ``name=context`` -> (name, context)."""
    name, equals, context = (part.strip() for part in entry.partition("="))
    return (name, context) if equals else (entry, entry)


def _verbose_names(listed: str, clusters: Mapping[str, str]) -> dict[str, str]:
    """Cluster name -> what the portal calls it, from WEBSHELL_CLUSTER_NAMES."""
    names: dict[str, str] = {}
    for entry in _entries(listed):
        name, equals, verbose = (part.strip() for part in entry.partition("="))
        if not equals or not verbose:
            raise ImproperlyConfigured(
                f"WEBSHELL_CLUSTER_NAMES: {entry!r} is not cluster=Name "
                "(e.g. WEBSHELL_CLUSTER_NAMES=prod=Production,dev=Development)."
            )
        if name not in clusters:
            raise ImproperlyConfigured(
                f"WEBSHELL_CLUSTER_NAMES: there is no cluster {name!r}; "
                f"the clusters are {', '.join(clusters)}."
            )
        names[name] = verbose
    return names


def _deprecated_single_cluster(environ: Mapping[str, str], kubeconfig: str) -> Clusters:
    """KUBE_CONTEXT / WEBSHELL_CLUSTER_NAME: the one cluster they always gave."""
    if environ.get("WEBSHELL_CLUSTERS") or environ.get("WEBSHELL_CLUSTER_NAMES"):
        raise ImproperlyConfigured(
            "KUBE_CONTEXT and WEBSHELL_CLUSTER_NAME cannot be combined with WEBSHELL_CLUSTERS "
            "or WEBSHELL_CLUSTER_NAMES: set only the latter."
        )
    name = environ.get("WEBSHELL_CLUSTER_NAME") or "default"
    context = environ.get("KUBE_CONTEXT", "")
    warnings.warn(
        "KUBE_CONTEXT and WEBSHELL_CLUSTER_NAME (with KUBECONFIG) are deprecated: set "
        f"WEBSHELL_CLUSTERS={name}={context or '<context>'} for the same cluster.",
        FutureWarning,
        stacklevel=2,
    )
    cluster: dict[str, object] = {"kubeconfig": kubeconfig}
    if context:
        cluster["context"] = context
    return {name: cluster}


def _entries(text: str) -> list[str]:
    return [entry.strip() for entry in text.split(",") if entry.strip()]


def _true(value: str | None) -> bool:
    # As webshell.settings.env_bool.
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}
