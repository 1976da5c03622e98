"""An AsyncAPI 3.0 document generated from the event schemas and the services' bindings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from servicekit.events import EventData, EventEnvelope, registry

ASYNCAPI_VERSION = "3.0.0"


@dataclass(frozen=True)
class ServiceBinding:
    """Which routing keys a service publishes and which it consumes (and in which queue)."""

    service: str
    publishes: Sequence[str]
    consumes: dict[str, Sequence[str]]  # queue purpose -> routing keys


def _channel_id(event_type: str) -> str:
    return event_type.replace(".", "_")


def _message_id(model: type[EventData]) -> str:
    return f"{model.__name__}V{model.version}"


def build_document(
    bindings: Sequence[ServiceBinding], *, exchange: str = "events", version: str = "1.0.0"
) -> dict[str, Any]:
    """The AsyncAPI document: one channel per event type on the topic exchange."""
    schemas: dict[str, Any] = {}
    envelope = EventEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(envelope.pop("$defs", {}))
    schemas["EventEnvelope"] = envelope

    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for model in registry.all():
        data_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(data_schema.pop("$defs", {}))
        schemas[model.__name__] = data_schema
        message_id = _message_id(model)
        messages[message_id] = {
            "name": model.event_type,
            "title": f"{model.event_type} v{model.version}",
            "summary": (model.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "traceparent": {"type": "string", "description": "W3C trace context"},
                    "x-correlation-id": {"type": "string"},
                },
            },
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/EventEnvelope"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": model.event_type},
                            "version": {"const": model.version},
                            "data": {"$ref": f"#/components/schemas/{model.__name__}"},
                        },
                    },
                ]
            },
            "bindings": {"amqp": {"messageType": model.event_type, "bindingVersion": "0.3.0"}},
        }
        channels[_channel_id(model.event_type)] = {
            "address": model.event_type,
            "description": f"Routing key {model.event_type} on the {exchange!r} topic exchange.",
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {"name": exchange, "type": "topic", "durable": True, "vhost": "/"},
                    "bindingVersion": "0.3.0",
                }
            },
        }

    operations: dict[str, Any] = {}
    for binding in sorted(bindings, key=lambda b: b.service):
        for event_type in sorted(binding.publishes):
            model = registry.model_for(event_type, 1)
            operations[f"{binding.service}.publish.{_channel_id(event_type)}"] = {
                "action": "send",
                "summary": f"{binding.service} publishes {event_type} through its outbox.",
                "channel": {"$ref": f"#/channels/{_channel_id(event_type)}"},
                "messages": [
                    {"$ref": f"#/channels/{_channel_id(event_type)}/messages/{_message_id(model)}"}
                ],
                "bindings": {
                    "amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}
                },
            }
        for purpose, keys in sorted(binding.consumes.items()):
            for event_type in sorted(keys):
                model = registry.model_for(event_type, 1)
                queue = f"{exchange}.{binding.service}.{purpose}"
                operations[f"{binding.service}.{purpose}.{_channel_id(event_type)}"] = {
                    "action": "receive",
                    "summary": f"{binding.service} consumes {event_type} from queue {queue}.",
                    "channel": {"$ref": f"#/channels/{_channel_id(event_type)}"},
                    "messages": [
                        {
                            "$ref": f"#/channels/{_channel_id(event_type)}/messages/"
                            f"{_message_id(model)}"
                        }
                    ],
                    "bindings": {"amqp": {"ack": True, "bindingVersion": "0.3.0"}},
                }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Shop events",
            "version": version,
            "description": (
                "Every event the services exchange on one durable RabbitMQ topic exchange. "
                "Routing key = event type; each message is an envelope whose `data` follows the "
                "event's schema. Consumers ignore unknown fields; a breaking change is a new "
                "version."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "description": "RabbitMQ as `make run` uses it.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
