"""`tollgate test POLICY TESTFILE`: run a policy's tests offline, as `opa test` does.

Exit 0 when every test passes, 1 when one fails, 2 when the policy or the test file
cannot be used (the error names file and line). Nothing is fetched: callers are
stated in the test file, never proven by real credentials (authz_service/policy/suite.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from authz_service.keys.registry import KeyRegistry
from authz_service.methods import EXTENSIONS
from authz_service.policy.compiled import CompiledPolicy
from authz_service.policy.loading import load_policy
from authz_service.policy.suite import CaseResult, PolicySuite, StandIn, check_suite, run_suite
from tollgate._yaml import line_of, load_yaml
from tollgate.config import ConfigError, load_config_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="the authz config (policy) file")
    parser.add_argument("tests", help="the policy test file (YAML: tests: [...])")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="list every test, not only the failing ones")


def run(args: argparse.Namespace) -> int:
    return run_tests(args.policy, args.tests, sys.stdout, sys.stderr, verbose=args.verbose)


def run_tests(policy_path: str, tests_path: str, out: TextIO, err: TextIO, *,
              verbose: bool = False) -> int:
    try:
        policy = load_policy(policy_path, KeyRegistry())
        suite, stand_ins = load_config_file(tests_path, lambda data: _build(data, policy))
    except ConfigError as exc:
        print(str(exc), file=err)
        return 2
    results = run_suite(suite, policy, stand_ins, time.time())
    lines = load_yaml(Path(tests_path).read_text(encoding="utf-8")).lines
    for result in results:
        if verbose or not result.passed:
            _report(result, tests_path, line_of(lines, ("tests", result.index)), out)
    failed = sum(not r.passed for r in results)
    summary = f"{len(results)} tests: {len(results) - failed} passed, {failed} failed"
    print(f"{tests_path}: {summary} (policy {policy_path})", file=out)
    return 1 if failed else 0


def _build(data: Any, policy: CompiledPolicy) -> tuple[PolicySuite, list[StandIn | None]]:
    own = {EXTENSIONS: policy.config.extension_methods}  # the policy's own methods
    suite = PolicySuite.model_validate(data, context=own)
    return suite, check_suite(suite, policy)


def _report(result: CaseResult, file: str, line: int | None, out: TextIO) -> None:
    mark = "ok  " if result.passed else "FAIL"
    print(f"{mark} {file}:{line}: {result.test.name}", file=out)
    for failure in result.failures:
        print(f"       {failure}", file=out)
