from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.otlp_kit import Receiver
from tests.otlp_kit import otlp_receiver as _otlp_receiver


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
    with _otlp_receiver() as endpoint_and_receiver:
        yield endpoint_and_receiver
