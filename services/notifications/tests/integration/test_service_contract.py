"""The shared service contract (health, docs, errors, request ids), run against notifications."""

from servicekit.testing.contract import ServiceAppContract


class TestServiceContract(ServiceAppContract):
    prefix = "/notifications"
