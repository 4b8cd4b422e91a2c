"""`tollgate`: operator tasks (run the local stack, mint demo tokens, check configs).

Each subcommand lives in its own module, registered by name in COMMANDS; adding
one means adding a module and a line here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tollgate.version import add_version

# subcommand -> (module, one-line help); each module has add_arguments(p) and run(args) -> int
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("tollgate_cli.stack", "run Envoy, the services, a demo issuer and upstream locally"),
    "check-config": ("tollgate_cli.check_config", "validate an authz or ratelimit config"),
    "token": ("tollgate_cli.token", "mint a demo access token (from `tollgate up`'s issuer)"),
    "limits": ("tollgate_cli.limits", "show or reset a caller's rate-limit counters"),
    "devcerts": ("tollgate_cli.devcerts", "create or reuse the demo CA and certificates"),
    "demo-issuer": ("tollgate_cli.demo_issuer", "serve only the demo OIDC issuer (JWKS)"),
    "demo-upstream": ("tollgate_cli.demo_upstream", "serve only the demo echo upstream"),
    "test": ("tollgate_cli.policy_tests", "run a policy's tests offline (POLICY TESTFILE)"),
    "explain": ("tollgate_cli.explain", "show why the policy decides what it does for a request"),
}


# What `tollgate --help` says: written for someone using Tollgate, not changing it.
DESCRIPTION = """\
Run Tollgate locally and check its configuration.

Tollgate is an authorization and rate-limit sidecar for Envoy: authz-service answers
Envoy's ext_authz checks (JWT, API keys, mTLS, policy, rate limits), ratelimit-service
is a drop-in for envoyproxy/ratelimit. This command runs the whole local stack (a real
Envoy in front of both) and helps with everyday tasks."""

EXAMPLES = """\
examples:
  tollgate up                               start Envoy, authz-service, a demo OIDC issuer
                                            and upstream; prints curl lines to try
  tollgate up --check                       the same, runs every demo request, exits 0 if
                                            each answer is as expected
  tollgate token --sub alice --scope "orders:read" --run-dir run
                                            mint a demo token for those curl lines
  tollgate check-config authz my-authz.yaml validate a policy before shipping it
  tollgate check-config ratelimit config/   validate envoyproxy/ratelimit YAML

Each command has its own --help. The services themselves: authz-service --help,
ratelimit-service --help; the docs: docs/authz.md, docs/ratelimit.md, docs/deploy.md."""


def _command_table() -> str:
    width = max(map(len, COMMANDS)) + 2
    return "commands:\n" + "\n".join(f"  {name:<{width}}{help_text}"
                                      for name, (_, help_text) in COMMANDS.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tollgate", description=DESCRIPTION, epilog=f"{_command_table()}\n\n{EXAMPLES}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(parser)
    # The commands are listed in the epilog, aligned (argparse wraps long names).
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, description=help_text))
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    code: int = module.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
