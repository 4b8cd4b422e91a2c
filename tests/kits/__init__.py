"""Harness shared by the suites and bench/: real processes, ports, polls, tokens, clients."""
