"""`tollgate`: operator tasks (run the local stack, mint demo tokens, check configs).

Each subcommand lives in its own module, registered by name in COMMANDS; adding
one means adding a module and a line here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help); each module has add_arguments(p) and run(args) -> int
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("tollgate_cli.check_config", "validate an authz or ratelimit config"),
    "test": ("tollgate_cli.policy_tests", "run a policy's tests offline (tollgate test "
             "POLICY TESTFILE)"),
    "up": ("tollgate_cli.stack", "run the local stack: Envoy, both services, demo issuer/upstream"),
    "token": ("tollgate_cli.token", "mint a demo access token (needs the run dir's issuer key)"),
    "devcerts": ("tollgate_cli.devcerts", "create or reuse the demo CA and certificates"),
    "demo-issuer": ("tollgate_cli.demo_issuer", "serve the demo OIDC discovery and JWKS"),
    "demo-upstream": ("tollgate_cli.demo_upstream", "serve the echo upstream"),
    "limits": ("tollgate_cli.limits", "show or reset a descriptor's rate-limit counters"),
    "explain": ("tollgate_cli.explain", "show why the policy decides what it does for a request"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    code: int = module.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
