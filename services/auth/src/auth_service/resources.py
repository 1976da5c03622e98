"""What the auth service holds open besides the shared runtime: keys, hasher, throttle."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from auth_service.config import Settings
from auth_service.keys import KeyStore, UnfitKeysError
from auth_service.passwords import PasswordHasher
from auth_service.throttle import LoginThrottle
from auth_service.tokens import TokenIssuer
from servicekit.logging import get_logger
from servicekit.outbox import Outbox
from servicekit.runtime import ServiceRuntime
from servicekit.security import JwksCache

log = get_logger(__name__)


class AuthResources:
    """The auth service's own long-lived parts, opened by ``start`` in the app's lifespan."""

    throttle: LoginThrottle
    outbox: Outbox

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        env_pem = settings.signing_key_pem.get_secret_value() if settings.signing_key_pem else None
        self.keys = KeyStore(
            directory=settings.keys_dir,
            access_token_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
            env_pem=env_pem,
        )
        self.issuer = TokenIssuer(
            keys=self.keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        )
        self.hasher = PasswordHasher(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
            concurrency=settings.hash_concurrency,
            queue_timeout=settings.hash_queue_timeout_seconds,
        )
        # Auth verifies its own tokens from its key store, never over HTTP from itself.
        self.jwks_cache = JwksCache()
        self._runtime: ServiceRuntime | None = None
        self._maintenance: asyncio.Task[None] | None = None

    @property
    def refresh_idle(self) -> timedelta:
        """How long an unused refresh token stays valid."""
        return timedelta(seconds=self.settings.refresh_token_idle_seconds)

    @property
    def session_lifetime(self) -> timedelta:
        """How long a login lasts at most, however often it is refreshed."""
        return timedelta(seconds=self.settings.refresh_family_lifetime_seconds)

    @property
    def access_token_ttl(self) -> timedelta:
        """How long an access token is valid."""
        return timedelta(seconds=self.settings.access_token_ttl_seconds)

    async def start(self, runtime: ServiceRuntime) -> None:
        """Load (in development: create) the keys, open the hasher and the throttle."""
        await asyncio.to_thread(self.prepare_keys)
        runtime.verifier.jwks = self.jwks_cache
        self.publish_keys()
        await self.hasher.start()
        self.throttle = LoginThrottle(
            redis=runtime.redis,
            email_limit=self.settings.login_email_max_failures,
            address_limit=self.settings.login_address_max_failures,
            window_seconds=self.settings.login_failure_window_seconds,
            prefix=f"{self.settings.redis_key_prefix}:login-attempts",
            service=self.settings.service_name,
        )
        self.outbox = runtime.outbox
        self._runtime = runtime
        runtime.health.add("signing_key", self._check_signing_key)
        self._maintenance = asyncio.create_task(self._maintain(), name="auth-maintenance")

    async def stop(self, runtime: ServiceRuntime) -> None:
        """Stop the background work and the hasher's threads."""
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        self.hasher.close()

    def prepare_keys(self) -> None:
        """Load the keys; refuse unfit ones in production, create one in development."""
        self.keys.load()
        if self.settings.is_production:
            problems = self.keys.production_problems()
            if problems:
                raise UnfitKeysError("auth refuses to start in production: " + "; ".join(problems))
            return
        created = self.keys.ensure_development_key(bits=self.settings.rsa_key_bits)
        if created is not None:
            log.warning(
                "keys.development_key_created", kid=created.kid, directory=str(self.keys.directory)
            )

    def publish_keys(self) -> None:
        """Give the in-process verifier the keys the JWKS publishes right now."""
        self.jwks_cache.set_jwks(self.keys.jwks())

    async def reload_keys(self) -> None:
        """Pick up keys rotated by the operator command or another instance."""
        await asyncio.to_thread(self.keys.load)
        self.publish_keys()

    async def _check_signing_key(self) -> None:
        self.keys.signing_key()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.settings.keys_reload_seconds)
            try:
                await self.reload_keys()
            except Exception as exc:
                log.warning("auth.maintenance_failed", error=f"{type(exc).__name__}: {exc}")
