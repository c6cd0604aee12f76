"""Web users, their sessions and login attempts in the database (rules HR-31..HR-33).

Beside :class:`~dispatcher.store.sql.SqlStore` on the same engine and audit table. Every
change to a user is one transaction with its audit record. Session tokens are stored as
their SHA-256 only; the caller hands in the hash, never the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, Table, delete, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from dispatcher.domain.access import Role, parse_roles, roles_text
from dispatcher.error import InputError
from dispatcher.store.sql import AuditEntry, SqlStore
from dispatcher.store.table import LoginAttemptRow, WebSessionRow, WebUserRow

WEB_USER: Table = WebUserRow.__table__  # type: ignore[attr-defined]
WEB_SESSION: Table = WebSessionRow.__table__  # type: ignore[attr-defined]
LOGIN_ATTEMPT: Table = LoginAttemptRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    roles: frozenset[Role]
    password_hash: str
    disabled: bool

    @property
    def actor(self) -> str:
        """How audit records name this person (``cli:...`` for the command line)."""
        return f"web:{self.name}"


@dataclass(frozen=True, slots=True)
class Session:
    token_sha256: str
    user: User
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime


def _user(row: RowMapping) -> User:
    return User(
        id=int(row["id"]),
        name=str(row["name"]),
        roles=parse_roles([row["roles"]]),
        password_hash=str(row["password_hash"]),
        disabled=row["disabled_at"] is not None,
    )


class UserStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- users --------------------------------------------------------------------------
    def add_user(
        self, name: str, password_hash: str, roles: frozenset[Role], *, actor: str, now: datetime
    ) -> User:
        text = roles_text(roles)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    WEB_USER.insert().values(
                        name=name,
                        password_hash=password_hash,
                        roles=text,
                        created_at=now,
                        created_by=actor,
                        password_changed_at=now,
                    )
                )
                SqlStore._audit(
                    conn,
                    [
                        AuditEntry(
                            "user_added",
                            actor,
                            now,
                            detail={"user": name, "roles": roles_text(roles)},
                        )
                    ],
                )
        except IntegrityError:
            raise InputError(f"a user {name!r} exists already") from None
        found = self.user(name)
        assert found is not None
        return found

    def user(self, name: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(WEB_USER).where(WEB_USER.c.name == name)).mappings().first()
        return None if row is None else _user(row)

    def users(self) -> list[RowMapping]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(WEB_USER).order_by(WEB_USER.c.name)).mappings())

    def change(
        self,
        name: str,
        *,
        actor: str,
        now: datetime,
        password_hash: str | None = None,
        roles: frozenset[Role] | None = None,
        disabled: bool | None = None,
    ) -> User:
        """Change a user's password, roles or enabled state, audited. A new password or a
        disabled user ends every session of theirs (a stolen cookie dies with the change)."""
        values: dict[str, object] = {}
        detail: dict[str, object] = {"user": name}
        if password_hash is not None:
            values.update(password_hash=password_hash, password_changed_at=now)
            detail["password"] = "changed"  # noqa: S105  (a word, not a secret)
        if roles is not None:
            values["roles"] = roles_text(roles)
            detail["roles"] = roles_text(roles)
        if disabled is not None:
            values["disabled_at"] = now if disabled else None
            detail["disabled"] = disabled
        with self.engine.begin() as conn:
            row = conn.execute(select(WEB_USER).where(WEB_USER.c.name == name)).mappings().first()
            if row is None:
                raise InputError(f"no user {name!r}")
            if values:
                conn.execute(update(WEB_USER).where(WEB_USER.c.id == row["id"]).values(**values))
            if password_hash is not None or disabled:
                conn.execute(delete(WEB_SESSION).where(WEB_SESSION.c.user_id == row["id"]))
            SqlStore._audit(conn, [AuditEntry("user_changed", actor, now, detail=detail)])
        found = self.user(name)
        assert found is not None
        return found

    # -- sessions -----------------------------------------------------------------------
    def start_session(
        self, user: User, token_sha256: str, csrf_token: str, *, client: str, now: datetime
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                WEB_SESSION.insert().values(
                    token_sha256=token_sha256,
                    user_id=user.id,
                    csrf_token=csrf_token,
                    created_at=now,
                    last_seen_at=now,
                    client=client,
                )
            )

    def session(self, token_sha256: str) -> Session | None:
        """The session with this token hash and its (enabled) user; None if there is none."""
        query = (
            select(WEB_SESSION, WEB_USER)
            .join(WEB_USER, WEB_USER.c.id == WEB_SESSION.c.user_id)
            .where(WEB_SESSION.c.token_sha256 == token_sha256)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        user = _user(row)
        if user.disabled:
            return None
        return Session(
            token_sha256=token_sha256,
            user=user,
            csrf_token=str(row["csrf_token"]),
            created_at=row["created_at"],
            last_seen_at=row["last_seen_at"],
        )

    def touch_session(self, token_sha256: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(WEB_SESSION)
                .where(WEB_SESSION.c.token_sha256 == token_sha256)
                .values(last_seen_at=now)
            )

    def end_session(self, token_sha256: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(WEB_SESSION).where(WEB_SESSION.c.token_sha256 == token_sha256))

    def end_stale_sessions(self, created_before: datetime, seen_before: datetime) -> int:
        """Delete sessions past their lifetime or idle limit (housekeeping)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(WEB_SESSION).where(
                    (WEB_SESSION.c.created_at < created_before)
                    | (WEB_SESSION.c.last_seen_at < seen_before)
                )
            )
        return int(result.rowcount or 0)

    # -- login attempts -----------------------------------------------------------------
    def record_attempt(
        self, name: str, client: str, *, succeeded: bool, now: datetime, actor: str | None = None
    ) -> None:
        """Keep the attempt for the rate limit, and audit it (who tried, from where)."""
        event = "user_logged_in" if succeeded else "login_refused"
        with self.engine.begin() as conn:
            conn.execute(
                LOGIN_ATTEMPT.insert().values(at=now, name=name, client=client, succeeded=succeeded)
            )
            SqlStore._audit(
                conn,
                [AuditEntry(event, actor or f"web:{name}", now, detail={"client": client})],
            )

    def failures_since(self, since: datetime, *, name: str, client: str) -> tuple[int, int]:
        """Failed attempts since ``since`` for this user name, and from this client."""
        failed = (LOGIN_ATTEMPT.c.at >= since) & (LOGIN_ATTEMPT.c.succeeded.is_(False))
        with self.engine.connect() as conn:
            by_name = conn.execute(
                select(func.count()).where(failed & (LOGIN_ATTEMPT.c.name == name))
            ).scalar_one()
            by_client = conn.execute(
                select(func.count()).where(failed & (LOGIN_ATTEMPT.c.client == client))
            ).scalar_one()
        return int(by_name), int(by_client)
