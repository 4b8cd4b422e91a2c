"""Load-time cost of check-config's warnings (policy/advice.py) on large route tables.

    .venv/bin/python -m bench.advice_cost [--routes 2000]

Prints seconds (best of 3) for routes that are all templates, all prefixes with hosts,
and all exact paths followed by the template that matches them.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from authz_service.config import AuthzConfig
from authz_service.policy.advice import advise


def tables(n: int) -> dict[str, list[dict[str, Any]]]:
    def route(i: int, match: dict[str, Any]) -> dict[str, Any]:
        return {"name": f"r{i}", "anonymous": True, "match": match}

    return {
        "templates": [route(i, {"methods": ["GET"], "path": {"template": f"/v1/t{i}/{{id}}"}})
                      for i in range(n)],
        "prefixes + hosts": [route(i, {"hosts": [f"h{i}.test"], "path": {"prefix": f"/v1/{i}/"}})
                             for i in range(n)],
        "exacts, then a template": [route(i, {"path": {"exact": f"/v1/things/{i}"}})
                                    for i in range(n)]
        + [route(n, {"path": {"template": "/v1/things/{id}"}})],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=2000)
    args = parser.parse_args()
    for name, routes in tables(args.routes).items():
        config = AuthzConfig.model_validate({"routes": routes})
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            advise(config)
            best = min(best, time.perf_counter() - started)
        print(f"{name}: {len(routes)} routes, {best:.3f} s")


if __name__ == "__main__":
    main()
