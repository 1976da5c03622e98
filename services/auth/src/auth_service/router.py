"""HTTP routes of the auth service."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Response, status
from fastapi.responses import JSONResponse

from auth_service import service
from auth_service.dependencies import (
    AuthDep,
    ClientAddressDep,
    PrincipalDep,
    SessionDep,
    UserAgentDep,
    reject_credentials_in_query,
)
from auth_service.errors import InvalidGrant, InvalidRequest, UnsupportedGrantType
from auth_service.schemas import (
    NO_NUL,
    Jwks,
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    SessionPage,
    SessionRead,
    TokenResponse,
    UserRead,
    normalise_email,
)
from auth_service.service import TokenPair
from servicekit.errors import error_responses

router = APIRouter(
    prefix="/auth", tags=["auth"], dependencies=[Depends(reject_credentials_in_query)]
)
well_known_router = APIRouter(tags=["keys"])

# Every route of the router answers 400 to a credential in the query string.
_BAD_QUERY = {400: "Malformed body, or a credential in the query string (never accepted there)."}
# RFC 6749 §5.1: token responses must not be cached anywhere.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _token_response(pair: TokenPair, response: Response) -> TokenResponse:
    response.headers.update(_NO_STORE)
    return TokenResponse(
        access_token=pair.access.token,
        expires_in=pair.access.expires_in,
        refresh_token=pair.refresh_token,
    )


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(
        400, 409, 415, 422, 503, descriptions={**_BAD_QUERY, 409: "The email is taken."}
    ),
    summary="Create an account",
)
async def register(body: RegisterRequest, session: SessionDep, auth: AuthDep) -> UserRead:
    """Register with email, password and name; publishes ``user.registered``."""
    credential = await service.register(
        session=session,
        hasher=auth.hasher,
        outbox=auth.outbox,
        email=body.email,
        password=body.password,
        name=body.name,
    )
    return UserRead(
        id=credential.id,
        email=credential.email,
        name=credential.name,
        created_at=credential.created_at,
    )


@router.post(
    "/login",
    responses=error_responses(
        400, 401, 415, 422, 429, 503, descriptions={**_BAD_QUERY, 401: "Wrong email or password."}
    ),
    summary="Log in with email and password (JSON)",
)
async def login(
    body: LoginRequest,
    session: SessionDep,
    auth: AuthDep,
    address: ClientAddressDep,
    response: Response,
    user_agent: UserAgentDep = None,
) -> TokenResponse:
    """Exchange email and password for an access token and a refresh token."""
    pair = await service.login(
        session=session,
        auth=auth,
        email=body.email,
        password=body.password,
        address=address,
        user_agent=user_agent,
    )
    return _token_response(pair, response)


@router.post(
    "/token",
    responses=error_responses(
        400,
        401,
        422,
        429,
        503,
        descriptions={
            400: "An OAuth error: invalid_request, invalid_grant, unsupported_grant_type."
        },
    ),
    summary="OAuth 2.0 token endpoint (form-encoded)",
)
async def token(
    session: SessionDep,
    auth: AuthDep,
    address: ClientAddressDep,
    response: Response,
    grant_type: Annotated[str | None, Form(description="password or refresh_token")] = None,
    username: Annotated[
        str | None, Form(description="The email (password grant)", pattern=NO_NUL)
    ] = None,
    password: Annotated[str | None, Form(max_length=1024)] = None,
    refresh_token: Annotated[str | None, Form(max_length=512)] = None,
    scope: Annotated[str | None, Form(description="Ignored")] = None,
    user_agent: UserAgentDep = None,
) -> TokenResponse:
    """RFC 6749 token endpoint (``password`` and ``refresh_token``); Swagger UI's Authorize."""
    if grant_type is None:
        raise InvalidRequest("grant_type is required.")
    if grant_type == "password":
        if not username or not password:
            raise InvalidRequest("username and password are required.")
        pair = await service.login(
            session=session,
            auth=auth,
            email=normalise_email(username),
            password=password,
            address=address,
            user_agent=user_agent,
            failure=InvalidGrant,
        )
    elif grant_type == "refresh_token":
        if not refresh_token:
            raise InvalidRequest("refresh_token is required.")
        pair = await service.refresh(session=session, auth=auth, refresh_token=refresh_token)
    else:
        raise UnsupportedGrantType()
    return _token_response(pair, response)


@router.post(
    "/refresh",
    responses=error_responses(
        400,
        401,
        415,
        422,
        503,
        descriptions={**_BAD_QUERY, 401: "Unknown, expired, revoked or reused refresh token."},
    ),
    summary="Exchange a refresh token for a new pair",
)
async def refresh(
    body: RefreshRequest, session: SessionDep, auth: AuthDep, response: Response
) -> TokenResponse:
    """Rotate: the refresh token is used up; presenting it again ends the whole session."""
    pair = await service.refresh(session=session, auth=auth, refresh_token=body.refresh_token)
    return _token_response(pair, response)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(400, 401, 415, 422, 503, descriptions=_BAD_QUERY),
    summary="Log out",
)
async def logout(
    body: RefreshRequest, session: SessionDep, auth: AuthDep, principal: PrincipalDep
) -> None:
    """Revoke the session's refresh tokens and its access tokens everywhere."""
    await service.logout(
        session=session, auth=auth, principal=principal, refresh_token=body.refresh_token
    )


@router.get(
    "/sessions",
    responses=error_responses(400, 401, 422, 503, descriptions=_BAD_QUERY),
    summary="List your sessions",
)
async def list_sessions(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> SessionPage:
    """The devices and browsers signed in to your account, newest first."""
    page = await service.list_sessions(
        session=session, principal=principal, limit=limit, cursor=cursor
    )
    return SessionPage(
        items=[
            SessionRead(
                id=view.family.id,
                created_at=view.family.created_at,
                last_used_at=view.family.last_used_at,
                expires_at=view.family.expires_at,
                user_agent=view.family.user_agent,
                current=view.current,
            )
            for view in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(400, 401, 404, 422, 503, descriptions=_BAD_QUERY),
    summary="Sign out one of your sessions",
)
async def revoke_session(
    session_id: uuid.UUID, session: SessionDep, auth: AuthDep, principal: PrincipalDep
) -> None:
    """End a session, for example on a lost device; its tokens stop working everywhere."""
    await service.revoke_session(
        session=session, auth=auth, principal=principal, session_id=session_id
    )


@well_known_router.get(
    "/.well-known/jwks.json", response_model=Jwks, summary="Public signing keys (JWKS)"
)
async def jwks(auth: AuthDep) -> JSONResponse:
    """The keys that verify access tokens, including recently rotated-out ones."""
    document: dict[str, Any] = auth.keys.jwks()
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=60"})
