"""`tollgate limits show|reset`: a descriptor's counters, through ratelimit-service's
admin API (`ratelimit-service --admin-address 8082` serves it on 127.0.0.1:8082).

    tollgate limits show --domain shop plan=gold subject=alice
    tollgate limits reset --domain shop plan=gold subject=alice
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from typing import Any

DEFAULT_ADDRESS = "127.0.0.1:8082"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    for name, text in (("show", "how much of each window the descriptor has used"),
                       ("reset", "delete the descriptor's current counters")):
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument("--admin-address",
                       default=os.environ.get("RATELIMIT_ADMIN_ADDRESS") or DEFAULT_ADDRESS,
                       help="ratelimit-service's --admin-address (env RATELIMIT_ADMIN_ADDRESS; "
                            f"default {DEFAULT_ADDRESS})")
        p.add_argument("--domain", required=True, help="the rate-limit domain")
        p.add_argument("--json", action="store_true", help="print the API's JSON answer")
        p.add_argument("entries", nargs="+", metavar="KEY=VALUE",
                       help="the descriptor's entries, in order")


def run(args: argparse.Namespace) -> int:
    entries = []
    for text in args.entries:
        key, sep, value = text.partition("=")
        if not sep or not key:
            print(f"tollgate limits: '{text}' is not KEY=VALUE", file=sys.stderr)
            return 2
        entries.append([key, value])
    host, _, port = args.admin_address.rpartition(":")
    if not port.isdigit():
        print(f"tollgate limits: '{args.admin_address}' is not HOST:PORT", file=sys.stderr)
        return 2
    body = json.dumps({"domain": args.domain, "entries": entries})
    path = "/v1/usage" if args.action == "show" else "/v1/reset"
    connection = http.client.HTTPConnection(host.strip("[]") or "127.0.0.1", int(port),
                                            timeout=10)
    try:
        connection.request("POST", path, body, {"content-type": "application/json"})
        response = connection.getresponse()
        answer: dict[str, Any] = json.loads(response.read() or b"{}")
    except (OSError, ValueError) as exc:
        print(f"tollgate limits: admin API at {args.admin_address}: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if response.status != 200:
        print(f"tollgate limits: {response.status}: {answer.get('error', answer)}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    elif args.action == "reset":
        print(f"{_name(answer)}: {answer['deleted']} counter(s) deleted")
    else:
        print(_show(answer))
    return 0


def _name(answer: dict[str, Any]) -> str:
    entries = ", ".join(f"{k}={v}" for k, v in answer["entries"])
    return f"{answer['domain']} [{entries}]"


def _show(answer: dict[str, Any]) -> str:
    lines = [_name(answer)]
    if answer.get("unlimited"):
        lines.append("  unlimited")
    elif not answer["windows"]:
        lines.append("  no limit applies")
    for w in answer["windows"]:
        label = f"{w['name']}: " if w["name"] else ""
        lines.append(
            f"  {label}{w['capacity']} per {w['unit']} ({w['algorithm']}): {w['used']} used, "
            f"{w['remaining']} left, full again in {w['reset_seconds']} s"
        )
    return "\n".join(lines)
