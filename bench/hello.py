"""The baseline of P1: a bare FastAPI app on uvicorn, as small as an endpoint can be.

Started by the bench with the services' uvicorn flags (one worker, no access log) on its own port:
``python -m uvicorn bench.hello:app``.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI(title="hello")


@app.get("/hello")
async def hello() -> dict[str, str]:
    """A constant JSON body."""
    return {"message": "hello"}
