"""HTTP method names a route may match on: the IANA HTTP Method Registry.

A route that names a method no client sends (`PSOT`) silently matches nothing, so
its requests fall through to a later route or to `unmatched`. Refused at load, unless
the policy lists it under `extension_methods` (a cache's PURGE or BAN, a method of
the operator's own): then it is a method on purpose.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection

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


# RFC 9110 section 9.1: a method is a token.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
# The validation context key under which a policy's own methods reach known_methods.
EXTENSIONS = "extension_methods"


def extension_methods(methods: list[str]) -> list[str]:
    """A policy's own methods, upper-cased; ValueError for one that is no method name."""
    upper = [m.upper() for m in methods]
    for method in upper:
        if not _TOKEN.match(method):
            raise ValueError(f"'{method}' is not a method name (RFC 9110: letters, digits "
                             "and !#$%&'*+.^_`|~-, at most 64)")
    return upper


def known_methods(methods: list[str], extensions: Collection[str] = ()) -> list[str]:
    """The methods upper-cased; ValueError naming the first one that is neither an HTTP
    method nor one of the policy's `extensions`."""
    upper = [m.upper() for m in methods]
    for method in upper:
        if method not in HTTP_METHODS and method not in extensions:
            near = difflib.get_close_matches(method, _COMMON, n=1) or difflib.get_close_matches(
                method, sorted(HTTP_METHODS), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ValueError(f"'{method}' is not an HTTP method{hint}; a method of your own "
                             "is listed under 'extension_methods'")
    return upper
