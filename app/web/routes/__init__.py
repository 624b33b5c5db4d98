"""Routers: ``api`` (JSON under /api and /healthz) and ``pages`` (HTML pages and their .json twins)."""
