"""The AsyncAPI document: valid against the AsyncAPI 3.0 schema and current with the code."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest

from servicekit.events import registry
from svctools import asyncapi


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(asyncapi.DOCUMENT.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(asyncapi.SCHEMA.read_text()))


class TestAsyncApiDocument:
    def test_validates_against_the_asyncapi_schema(
        self, document: dict[str, Any], validator: jsonschema.Draft7Validator
    ) -> None:
        errors = [f"{list(e.path)}: {e.message[:200]}" for e in validator.iter_errors(document)]
        assert errors == []

    def test_the_validator_does_reject_a_broken_document(
        self, document: dict[str, Any], validator: jsonschema.Draft7Validator
    ) -> None:
        broken = copy.deepcopy(document)
        broken["operations"]["bogus"] = {"action": "fly", "channel": {"$ref": "#/channels/x"}}
        assert list(validator.iter_errors(broken))

    def test_committed_copy_is_current(self) -> None:
        assert asyncapi.DOCUMENT.read_text() == asyncapi.render(), "run `make docs`"

    def test_every_event_has_a_channel_and_a_message(self, document: dict[str, Any]) -> None:
        addresses = {channel["address"] for channel in document["channels"].values()}
        assert addresses == {model.event_type for model in registry.all()}

    def test_every_consumed_event_has_a_publisher(self, document: dict[str, Any]) -> None:
        def types(action: str) -> set[str]:
            return {
                op["channel"]["$ref"].rsplit("/", 1)[1].replace("_", ".", 1)
                for op in document["operations"].values()
                if op["action"] == action
            }

        consumed, published = types("receive"), types("send")
        assert consumed <= published, f"consumed but never published: {consumed - published}"
