"""`python -m ratelimit_service`: the same as the `ratelimit-service` command."""

from __future__ import annotations

import sys

from ratelimit_service.cli import main

sys.exit(main())
