"""Which store to use, from a URL or from envoyproxy/ratelimit's REDIS_* settings.

Accepted forms:
- empty: the in-memory store;
- `redis://[user:pass@]host:port[/db]`, `rediss://...`, `unix:///path/to.sock`: one Redis;
- `redis+sentinel://[user:pass@]host:port[,host:port...]/master_name`;
- `redis+cluster://[user:pass@]host:port[,host:port...]` (seed nodes of a Redis Cluster);
- the reference's bare forms, read with `redis_type` (REDIS_TYPE) and `socket_type`
  (REDIS_SOCKET_TYPE): single `host:port` or `/path.sock`; cluster `h1:p1,h2:p2`;
  sentinel `master_name,h1:p1,h2:p2`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote

from ratelimit_service.stores.resp import Endpoint


class TargetError(ValueError):
    """A Redis URL or type that cannot be used."""


@dataclass(frozen=True)
class StoreTarget:
    kind: str  # memory | single | sentinel | cluster
    url: str = ""  # single: a redis-py URL
    nodes: list[tuple[str, int]] = field(default_factory=list)  # cluster seeds / sentinels
    master: str = ""  # sentinel master name
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_target(
    url: str,
    *,
    redis_type: str = "single",
    socket_type: str = "tcp",
    auth: str = "",
    tls: bool = False,
    username: str = "",
) -> StoreTarget:
    """Turn the operator's settings into a StoreTarget (TargetError if malformed).

    `auth` is `password` or `user:password`; with `username` set (or a leading
    `:`), `auth` is the whole password, colons and all.
    """
    target = _parse_target(url, redis_type=redis_type, socket_type=socket_type, auth=auth,
                           tls=tls, user_flag=username)
    if target.kind == "single":
        parse_redis_url(target.url)  # every malformed part is a TargetError now, not later
    return target


def _parse_target(
    url: str, *, redis_type: str, socket_type: str, auth: str, tls: bool, user_flag: str
) -> StoreTarget:
    url = url.strip()
    redis_type = redis_type.strip().lower() or "single"
    if redis_type not in ("single", "sentinel", "cluster"):
        raise TargetError(f"redis type '{redis_type}' is not single, sentinel or cluster")
    username: str | None
    password: str | None
    if user_flag:
        username, password = user_flag, auth or None
    else:
        username, password = _split_auth(auth)
    if not url:
        return StoreTarget("memory")
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _bare(url, redis_type, socket_type=socket_type, username=username,
                     password=password, tls=tls)
    scheme = scheme.lower()
    creds, at, location = rest.rpartition("@")
    if at:
        username, password = _url_auth(creds)
    if scheme == "redis+cluster" or (scheme in ("redis", "rediss") and redis_type == "cluster"):
        nodes = _nodes(location.split("/", 1)[0])
        return StoreTarget("cluster", nodes=nodes, username=username, password=password,
                           tls=tls or scheme == "rediss")
    if scheme == "redis+sentinel":
        hosts, _, master = location.partition("/")
        if not master.strip("/"):
            raise TargetError(f"'{_mask(url)}': sentinel URL needs /master_name")
        return StoreTarget("sentinel", nodes=_nodes(hosts), master=master.strip("/"),
                           username=username, password=password, tls=tls)
    if scheme in ("redis", "rediss", "unix"):
        if scheme == "redis" and tls:
            url = "rediss" + url[len("redis") :]
        if not at and password:
            url = _with_auth(url, username, password)
        return StoreTarget("single", url=url, username=username, password=password)
    raise TargetError(f"'{_mask(url)}': unsupported scheme '{scheme}'")


def _bare(
    url: str, redis_type: str, *, socket_type: str, username: str | None, password: str | None,
    tls: bool,
) -> StoreTarget:
    if redis_type == "cluster":
        return StoreTarget("cluster", nodes=_nodes(url), username=username, password=password,
                           tls=tls)
    if redis_type == "sentinel":
        master, _, hosts = url.partition(",")
        if not master or not hosts:
            raise TargetError(f"'{url}': sentinel form is master_name,host:port[,host:port]")
        return StoreTarget("sentinel", nodes=_nodes(hosts), master=master, username=username,
                           password=password, tls=tls)
    if socket_type.strip().lower() == "unix" or url.startswith("/"):
        full = f"unix://{url}"
    else:
        _nodes(url)  # validates host:port
        full = f"{'rediss' if tls else 'redis'}://{url}"
    if password:
        full = _with_auth(full, username, password)
    return StoreTarget("single", url=full, username=username, password=password)


def parse_redis_url(url: str, *, tls_ca_file: str = "") -> Endpoint:
    """A single Redis URL as an Endpoint: `redis://[user:pass@]host[:port][/db]`,
    `rediss://...`, `unix:///path.sock[?db=N&password=...&username=...]`."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("redis", "rediss", "unix"):
        raise TargetError(f"'{_mask(url)}': not a redis://, rediss:// or unix:// URL")
    rest, _, query_text = rest.partition("?")
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    creds, at, location = rest.rpartition("@")
    username, password = _url_auth(creds) if at else (None, None)
    username = query.get("username", username) or None
    password = query.get("password", password) or None
    db_text = query.get("db", "")
    if scheme == "unix":
        path = unquote(location)
        if not path.startswith("/"):
            raise TargetError(f"'{_mask(url)}': unix:// needs an absolute socket path")
        return Endpoint(path=path, username=username, password=password,
                        db=_db(db_text, url))
    hostport, _, db_path = location.partition("/")
    host, port = _host_port(hostport, url)
    return Endpoint(host, port, username=username, password=password,
                    db=_db(db_path or db_text, url), tls=scheme == "rediss",
                    tls_ca_file=tls_ca_file)


def _host_port(text: str, url: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, after = text[1:].partition("]")
        port_text = after.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise TargetError(f"'{_mask(url)}': no host")
    if not port_text:
        return host, 6379
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TargetError(f"'{_mask(url)}': port '{port_text}' is not a number in 1-65535")
    return host, int(port_text)


def _db(text: str, url: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise TargetError(f"'{_mask(url)}': database '{text}' is not a number")
    return int(text)


def _nodes(text: str) -> list[tuple[str, int]]:
    nodes = []
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TargetError(f"'{item}' is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def _split_auth(auth: str) -> tuple[str | None, str | None]:
    if not auth:
        return None, None
    user, sep, password = auth.partition(":")
    if not sep:
        return None, auth
    return (user or None), password


def _url_auth(creds: str) -> tuple[str | None, str | None]:
    user, sep, password = creds.partition(":")
    if not sep:
        return None, unquote(user) or None
    return (unquote(user) or None), unquote(password)


def _with_auth(url: str, username: str | None, password: str) -> str:
    scheme, _, rest = url.partition("://")
    user = quote(username or "", safe="")
    if scheme == "unix":
        sep = "&" if "?" in rest else "?"
        extra = f"password={quote(password, safe='')}" + (f"&username={user}" if user else "")
        return f"{url}{sep}{extra}"
    return f"{scheme}://{user}:{quote(password, safe='')}@{rest}"


def _mask(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    _, at, location = rest.rpartition("@")
    return f"{scheme}{sep}*****@{location}" if at else url
