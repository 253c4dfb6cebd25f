"""Authenticated, audited web shells into Kubernetes pods, as a reusable Django app."""

__version__ = "0.1.0"
