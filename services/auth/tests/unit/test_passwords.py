"""The password policy and the argon2id hasher."""

from __future__ import annotations

import asyncio
import threading

import pytest
from argon2 import PasswordHasher as Argon2Hasher

from auth_service.errors import HashingBusy, WeakPassword
from auth_service.passwords import PasswordHasher, check_password, common_passwords


class SpyArgon2:
    """Wraps argon2's hasher: records the hashing thread, can hold a hash back."""

    def __init__(self, real: Argon2Hasher, release: threading.Event | None = None) -> None:
        self.real = real
        self.release = release
        self.threads: list[str] = []

    def hash(self, password: str) -> str:
        self.threads.append(threading.current_thread().name)
        if self.release is not None:
            self.release.wait(5)
        return self.real.hash(password)


def _hasher(**overrides: float) -> PasswordHasher:
    options: dict[str, float] = {
        "memory_kib": 19456,
        "time_cost": 2,
        "parallelism": 1,
        "concurrency": 2,
        "queue_timeout": 5.0,
    }
    options.update(overrides)
    return PasswordHasher(**options)  # type: ignore[arg-type]


class TestPasswordPolicy:
    def test_the_bundled_list_holds_the_classics(self) -> None:
        listed = common_passwords()
        assert {"password123456", "qwertyuiop123", "123456789012"} <= listed
        assert len(listed) > 2000

    @pytest.mark.parametrize(
        "password", ["password123456", "QWERTYUIOP123", "123456789012", "Password2024!"]
    )
    def test_common_passwords_are_refused_whatever_their_case(self, password: str) -> None:
        with pytest.raises(WeakPassword, match="too common"):
            check_password(password, email="a@example.com", name="A")

    @pytest.mark.parametrize("length", [11, 129])
    def test_length_outside_12_to_128_is_refused(self, length: int) -> None:
        with pytest.raises(WeakPassword, match="between 12 and 128"):
            check_password("k" * (length - 1) + "9", email="a@example.com", name="A")

    def test_length_counts_characters_not_bytes(self) -> None:
        check_password("ü" * 64 + "ß" * 64, email="a@example.com", name="A")

    @pytest.mark.parametrize(
        "password", ["lovelace.ada@example.com", "LOVELACE.ADA", "Ada Lovelace 1815"]
    )
    def test_the_email_its_local_part_or_the_name_are_refused(self, password: str) -> None:
        with pytest.raises(WeakPassword, match="email address or your name"):
            check_password(password, email="lovelace.ada@example.com", name="ada lovelace 1815")

    def test_a_long_unlisted_passphrase_is_accepted(self) -> None:
        check_password("violet harbour lantern 42", email="a@example.com", name="A")


class TestPasswordHasher:
    async def test_hashes_with_argon2id_and_verifies(self) -> None:
        hasher = _hasher()
        await hasher.start()
        try:
            hashed = await hasher.hash("violet harbour lantern 42")
            assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
            assert await hasher.verify(hashed, "violet harbour lantern 42")
            assert not await hasher.verify(hashed, "violet harbour lantern 43")
            assert not await hasher.verify("not a hash", "violet harbour lantern 42")
        finally:
            hasher.close()

    async def test_unicode_forms_of_one_password_match(self) -> None:
        hasher = _hasher()
        await hasher.start()
        try:
            hashed = await hasher.hash("caf\u00e9 au lait 1234")
            assert await hasher.verify(hashed, "cafe\u0301 au lait 1234")
        finally:
            hasher.close()

    def test_hashes_with_weaker_parameters_need_a_rehash(self) -> None:
        old = Argon2Hasher(time_cost=1, memory_cost=47104, parallelism=1).hash("x" * 12)
        assert _hasher().needs_rehash(old)
        assert not _hasher().needs_rehash(
            Argon2Hasher(time_cost=2, memory_cost=19456, parallelism=1).hash("x" * 12)
        )

    async def test_hashing_runs_off_the_event_loop_thread(self) -> None:
        hasher = _hasher()
        spy = SpyArgon2(hasher._argon2)
        hasher._argon2 = spy  # type: ignore[assignment]
        await hasher.start()
        try:
            await hasher.hash("violet harbour lantern 42")
        finally:
            hasher.close()
        seen = spy.threads
        assert seen
        assert all(name.startswith("argon2") for name in seen)
        assert threading.main_thread().name not in seen

    async def test_a_full_queue_answers_busy_instead_of_piling_up(self) -> None:
        hasher = _hasher(concurrency=1, queue_timeout=0.05)
        await hasher.start()
        release = threading.Event()
        hasher._argon2 = SpyArgon2(hasher._argon2, release)  # type: ignore[assignment]
        try:
            first = asyncio.create_task(hasher.hash("violet harbour lantern 42"))
            await asyncio.sleep(0.01)
            with pytest.raises(HashingBusy):
                await hasher.hash("violet harbour lantern 42")
            release.set()
            assert (await first).startswith("$argon2id$")
        finally:
            release.set()
            hasher.close()
