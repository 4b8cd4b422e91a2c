"""`tollgate check-config authz|ratelimit PATH`: the services' --check-config, in one place."""

from __future__ import annotations

import argparse
import importlib
import sys

_LOADERS = {
    "authz": "authz_service.cli",
    "ratelimit": "ratelimit_service.cli",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", choices=sorted(_LOADERS))
    parser.add_argument("path", help="config file (or, for ratelimit, a directory)")
    parser.add_argument("--strict", action="store_true",
                        help="authz: fail on warnings too (routes hidden by earlier ones, "
                             "an empty policy, unused identity sources)")


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(_LOADERS[args.service])
    options = {"strict": True} if args.strict and args.service == "authz" else {}
    code: int = module.check_config(args.path, sys.stdout, sys.stderr, **options)
    return code
