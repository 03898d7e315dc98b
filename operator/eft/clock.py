"""The one timestamp format of the project: UTC, RFC 3339, to the second (`2026-01-31T12:00:00Z`), as used
in `_SUCCESS.json`, Kubernetes conditions and Events."""

from __future__ import annotations

from datetime import datetime, timezone


def now_iso() -> str:
    """The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
