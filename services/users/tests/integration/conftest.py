"""Fixtures for tests against the real PostgreSQL, Redis and RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import UserSelects


@pytest.fixture
def user_selects() -> Iterator[UserSelects]:
    counter = UserSelects()
    yield counter
    counter.close()
