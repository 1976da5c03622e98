"""The shared service contract (health, docs, errors, request ids), run against users."""

from servicekit.testing.contract import ServiceAppContract


class TestServiceContract(ServiceAppContract):
    prefix = "/users"
