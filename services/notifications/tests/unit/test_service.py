"""Pure pieces of the service: the dispatcher's backoff, the API's status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from notifications_service.dispatcher import backoff
from notifications_service.schemas import NotificationRead


class TestBackoff:
    def test_doubles_per_attempt_within_jitter_and_is_capped(self) -> None:
        for _ in range(200):
            assert 0.5 <= backoff(1, initial=1, maximum=60) <= 1
            assert 2 <= backoff(3, initial=1, maximum=60) <= 4
            assert 30 <= backoff(20, initial=1, maximum=60) <= 60


class TestNotificationRead:
    def test_sending_is_shown_as_pending(self) -> None:
        now = datetime.now(UTC)
        item = NotificationRead.model_validate(
            {
                "id": uuid.uuid4(),
                "event_id": uuid.uuid4(),
                "event_type": "order.confirmed",
                "template": "order_confirmed",
                "channel": "email",
                "recipient": "ada@example.com",
                "subject": "s",
                "status": "sending",
                "attempts": 1,
                "created_at": now,
                "sent_at": None,
            }
        )
        assert item.status == "pending"
        assert item.model_dump(mode="json")["created_at"].endswith("Z")
