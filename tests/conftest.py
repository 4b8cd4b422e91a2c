from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.otlp_kit import Receiver
from tests.otlp_kit import otlp_receiver as _otlp_receiver

# Every authz-service a test starts serves the HTTP door only where the test asks for it
# (by --http-address, which wins over this): its default port is shared by every
# process on the machine, and tests run beside each other.
os.environ.setdefault("AUTHZ_HTTP_ADDRESS", "off")


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
    with _otlp_receiver() as endpoint_and_receiver:
        yield endpoint_and_receiver
