"""HTTP routes of the payments-gateway service."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/payments", tags=["payments-gateway"])
