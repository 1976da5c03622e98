"""Every environment variable the deployments give a service is a setting that service reads.

A misspelt or stale variable in docker-compose.yml or the Kubernetes ConfigMaps would be
ignored silently by pydantic-settings; this makes it a test failure instead.
"""

from __future__ import annotations

import importlib

import pytest
from pydantic_settings import BaseSettings
from test_compose import SERVICE_ENV_VARS

PACKAGES = {
    "auth": "auth_service",
    "users": "users_service",
    "orders": "orders_service",
    "payments-gateway": "payments_gateway",
    "notifications": "notifications_service",
}


def settings_class(service: str) -> type[BaseSettings]:
    module = importlib.import_module(f"{PACKAGES[service]}.config")
    settings: type[BaseSettings] = module.Settings
    return settings


@pytest.mark.parametrize("service", list(PACKAGES))
def test_every_deployed_variable_is_a_setting_of_that_service(service: str) -> None:
    settings = settings_class(service)
    prefix = str(settings.model_config.get("env_prefix", ""))
    fields = set(settings.model_fields)
    for variable in SERVICE_ENV_VARS[service]:
        assert variable.startswith(prefix), f"{variable} lacks the {prefix} prefix"
        assert variable.removeprefix(prefix).lower() in fields, (
            f"{service} has no setting for {variable}"
        )
