"""Password hashing (argon2id, off the event loop, bounded) and the password policy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib.resources import files
from typing import TypeVar

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError

from auth_service.errors import HashingBusy, WeakPassword

T = TypeVar("T")

MIN_LENGTH = 12
MAX_LENGTH = 128
_DUMMY_PASSWORD = "not a password anyone has: timing equaliser"


def _lower_thread_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads on their own)."""
    if nice > 0 and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def normalise(password: str) -> str:
    """NFC, so the same password typed on different systems hashes the same (RFC 8265)."""
    return unicodedata.normalize("NFC", password)


class PasswordHasher:
    """argon2id hashing in a small dedicated thread pool; callers queue with a deadline."""

    # Hashing costs tens of milliseconds of CPU by design: on the event loop it would stall
    # every other request, and unbounded it would let a login flood take every thread. Its
    # threads also run at a lower CPU priority (``thread_nice``), so a burst of logins slows
    # logins, not every other request on the machine.

    def __init__(
        self,
        *,
        memory_kib: int,
        time_cost: int,
        parallelism: int,
        concurrency: int,
        queue_timeout: float,
        thread_nice: int = 10,
    ) -> None:
        self._argon2 = Argon2Hasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._concurrency = concurrency
        self._queue_timeout = queue_timeout
        self._thread_nice = thread_nice
        self._slots = asyncio.Semaphore(concurrency)
        self._executor: ThreadPoolExecutor | None = None
        self._dummy_hash: str | None = None

    async def start(self) -> None:
        """Open the thread pool and prepare the hash unknown emails are checked against."""
        self._executor = ThreadPoolExecutor(
            max_workers=self._concurrency,
            thread_name_prefix="argon2",
            initializer=_lower_thread_priority,
            initargs=(self._thread_nice,),
        )
        self._dummy_hash = await self.hash(_DUMMY_PASSWORD)

    def close(self) -> None:
        """Stop the thread pool (hashes in flight finish)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        if self._executor is None:
            raise RuntimeError("PasswordHasher.start() was not awaited")
        try:
            async with asyncio.timeout(self._queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise HashingBusy() from None
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, fn, *args)
        finally:
            self._slots.release()

    async def hash(self, password: str) -> str:
        """The argon2id hash (PHC string) of a password."""
        return await self._run(self._argon2.hash, normalise(password))

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether the password matches the hash."""
        return await self._run(self._verify, password_hash, normalise(password))

    async def verify_dummy(self, password: str) -> None:
        """Spend the time a real verification takes (for unknown emails); always fails."""
        assert self._dummy_hash is not None
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than the current ones."""
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


@cache
def common_passwords() -> frozenset[str]:
    """The bundled list of passwords attackers try first (lower case)."""
    text = files("auth_service").joinpath("common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def check_password(password: str, *, email: str, name: str) -> None:
    """Raise WeakPassword with a message saying what is wrong (ASVS V6.2: length, no lists)."""
    password = normalise(password)
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise WeakPassword(
            f"The password must be between {MIN_LENGTH} and {MAX_LENGTH} characters long."
        )
    folded = password.casefold().strip()
    email_folded = email.casefold()
    personal = {email_folded, email_folded.split("@", 1)[0], name.casefold().strip()}
    if folded in personal:
        raise WeakPassword("The password must not be your email address or your name.")
    if folded in common_passwords():
        raise WeakPassword("This password is too common and easy to guess; choose another one.")
