"""Alembic environment of the notifications service."""

from notifications_service.models import Base
from servicekit.migrations import run_env

run_env(Base.metadata)
