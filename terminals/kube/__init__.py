"""Talking to Kubernetes: the cluster registry, pod listing and the async exec upstream."""
