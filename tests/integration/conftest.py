"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import BrokerThread

from .v5helpers import Env


@pytest.fixture
def env(make_broker_thread: Callable[[dict[str, Any]], BrokerThread]) -> Iterator[Env]:
    """Brokers started on demand (``env.start(**mqtt_options)``) and clients (raw and paho,
    MQTT 5 and 3.1.1) that are all closed after the test."""
    e = Env(make_broker_thread)
    yield e
    e.close()
