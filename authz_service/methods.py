"""HTTP method names a route may match on: the IANA HTTP Method Registry.

A route that names a method no client sends (`PSOT`) silently matches nothing, so
its requests fall through to a later route or to `unmatched`. Refused at load.
"""

from __future__ import annotations

import difflib

# https://www.iana.org/assignments/http-methods (RFC 9110, 5789, 4918 and the
# WebDAV / versioning extensions). PRI is registered but is HTTP/2's connection
# preface, never a request's method, so it is left out.
HTTP_METHODS = frozenset({
    "ACL", "BASELINE-CONTROL", "BIND", "CHECKIN", "CHECKOUT", "CONNECT", "COPY", "DELETE",
    "GET", "HEAD", "LABEL", "LINK", "LOCK", "MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL",
    "MKREDIRECTREF", "MKWORKSPACE", "MOVE", "OPTIONS", "ORDERPATCH", "PATCH", "POST",
    "PROPFIND", "PROPPATCH", "PUT", "REBIND", "REPORT", "SEARCH", "TRACE", "UNBIND",
    "UNCHECKOUT", "UNLINK", "UNLOCK", "UPDATE", "UPDATEREDIRECTREF", "VERSION-CONTROL",
})
_COMMON = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def known_methods(methods: list[str]) -> list[str]:
    """The methods upper-cased; ValueError naming the first one that is no HTTP method."""
    upper = [m.upper() for m in methods]
    for method in upper:
        if method not in HTTP_METHODS:
            near = difflib.get_close_matches(method, _COMMON, n=1) or difflib.get_close_matches(
                method, sorted(HTTP_METHODS), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ValueError(f"'{method}' is not an HTTP method{hint}")
    return upper
