"""Alembic environment of the orders service."""

from orders_service.models import Base
from servicekit.migrations import run_env

run_env(Base.metadata)
