"""Logs on stderr, one record per line: JSON objects, or text with key=value fields.

Both formats carry the same structured fields (a record's `extra`). A field whose
name says it holds a credential is never written, and a URL's password is
masked wherever it appears in a value. gRPC's own report of a request it could
not deserialize (an 800-byte traceback per message, which any client can cause)
is turned into one short line per method and interval, with a count.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
REDACTED = "<redacted>"
# Field names that carry a secret: never logged, whatever the value.
_SECRET_NAME = re.compile(
    r"(^|_)(password|passwd|secret|token|authorization|cookie|credential|api_?key)s?($|_)",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@\s:]*:)[^/@\s]*(?P<at>@)", re.I)
_BARE = re.compile(r"^[A-Za-z0-9_.,:/@+%-]+$")
_LINE_BREAKS = str.maketrans({"\r": "\\r", "\n": "\\n"})


def _safe(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\g<head>" + REDACTED + r"\g<at>", value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if depth < 4 and isinstance(value, list | tuple | set | frozenset):
        return [_safe(item, depth + 1) for item in value]  # a list stays a list in JSON
    if depth < 4 and isinstance(value, dict):
        return {str(k): REDACTED if _SECRET_NAME.search(str(k)) else _safe(v, depth + 1)
                for k, v in value.items()}
    return _safe(str(value))


def fields(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    """The record's structured fields (its `extra`), credentials removed."""
    for key, value in vars(record).items():
        if key in _STANDARD or key.startswith("_"):
            continue
        yield key, REDACTED if _SECRET_NAME.search(key) else _safe(value)


def _timestamp(record: logging.LogRecord) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _safe(record.getMessage()),
        }
        for key, value in fields(record):
            entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _text_value(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    text = str(value)
    if _BARE.match(text):
        return text
    return json.dumps(text)  # quoted; quotes, backslashes and control characters escaped


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER message key=value ...`: values quoted when they need it."""

    def format(self, record: logging.LogRecord) -> str:
        message = str(_safe(record.getMessage())).translate(_LINE_BREAKS)
        parts = [_timestamp(record), record.levelname, record.name, message]
        parts += [f"{key}={_text_value(value)}" for key, value in fields(record)]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class MalformedMessageFilter(logging.Filter):
    """gRPC's traceback for an undecodable request -> one line per method per interval.

    grpc.aio logs `Unexpected [DecodeError] raised by servicer method [/pkg.Svc/M]`
    with the traceback for every such message. The first one for a method is
    logged (without the traceback), then at most one per `interval` seconds
    carrying how many were not logged; `on_malformed(method)` counts every one.
    """

    _PATTERN = re.compile(r"Unexpected \[DecodeError\] raised by servicer method \[(?P<m>[^\]]*)\]")

    def __init__(
        self,
        interval: float = 10.0,
        on_malformed: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.on_malformed = on_malformed
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("grpc"):
            return True
        match = self._PATTERN.search(record.getMessage())
        if match is None:
            return True
        method = match.group("m")[:200]
        if self.on_malformed is not None:
            self.on_malformed(method)
        now = self.clock()
        with self._lock:
            last = self._last.get(method)
            if last is not None and now - last < self.interval:
                self._unlogged[method] = self._unlogged.get(method, 0) + 1
                return False
            self._last[method] = now
            unlogged = self._unlogged.pop(method, 0)
        error = record.exc_info[1] if record.exc_info else None
        record.msg = "malformed request message refused"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.method = method
        record.error = str(error)[:200] if error is not None else "DecodeError"
        record.not_logged_since_last = unlogged
        return True


# Libraries whose debug records describe their own machinery (gRPC's loop bookkeeping on
# every call, HTTP/2 frames and HPACK headers, connection pools): never below INFO, so
# `--log-level debug` shows the services' decisions and reloads, not a flood.
LIBRARY_LOGGERS = ("grpc", "asyncio", "hpack", "h2", "httpcore", "httpx", "urllib3")


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    on_malformed: Callable[[str], None] | None = None,
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(MalformedMessageFilter(on_malformed=on_malformed or _count_malformed))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))


def _count_malformed(method: str) -> None:
    from tollgate.metrics import MALFORMED_MESSAGES  # noqa: PLC0415 - keep logs importable alone

    MALFORMED_MESSAGES.labels(method).inc()
