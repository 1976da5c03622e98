"""The users service's tables."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Index, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from servicekit.db import new_metadata
from servicekit.inbox import inbox_table
from servicekit.outbox import outbox_table
from servicekit.revocation import revocation_table

NAME_MAX = 100
BIO_MAX = 1000
EMAIL_MAX = 320


class Base(DeclarativeBase):
    metadata = new_metadata()


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
revocations = revocation_table(Base.metadata)


class User(Base):
    """A user's profile, created from auth's ``user.registered``."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(f"char_length(bio) <= {BIO_MAX}", name="bio_length"),
        CheckConstraint("char_length(name) >= 1", name="name_not_empty"),
        # Keyset pagination walks this index backwards (newest first).
        Index("ix_users_created_at_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX))
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    bio: Mapped[str | None] = mapped_column(Text, nullable=True)
    roles: Mapped[list[str]] = mapped_column(
        ARRAY(String(50)), default=list, server_default=text("'{}'")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeletedUser(Base):
    """The id of a deleted profile, so a late ``user.registered`` cannot bring it back."""

    __tablename__ = "deleted_users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


users = Base.metadata.tables[User.__tablename__]
