"""The shared service contract (health, docs, errors, request ids), run against orders."""

from servicekit.testing.contract import ServiceAppContract


class TestServiceContract(ServiceAppContract):
    prefix = "/orders"
