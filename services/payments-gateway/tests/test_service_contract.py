"""The shared service contract (health, docs, errors, request ids), run against payments-gateway."""

from servicekit.testing.contract import ServiceAppContract


class TestServiceContract(ServiceAppContract):
    prefix = "/payments"
