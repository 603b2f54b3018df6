"""Every private name of Twisted pipeserver uses, in one place (placeholder, see step 2)."""

from __future__ import annotations

from typing import Any, List


def temp_data_len(transport: object) -> int:
    """Bytes a TCP transport holds in ``_tempDataBuffer`` (0 for others)."""
    value = getattr(transport, "_tempDataLen", 0)
    return value if isinstance(value, int) else 0


def temp_data(transport: Any) -> List[bytes]:
    pending: List[bytes] = transport._tempDataBuffer
    return pending


def set_temp_data(transport: Any, rest: bytes) -> None:
    transport._tempDataBuffer = [rest] if rest else []
    transport._tempDataLen = len(rest)


def response_chunked(request: object) -> bool:
    return bool(getattr(request, "chunked", False))
