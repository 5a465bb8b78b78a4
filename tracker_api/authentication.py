"""Token (``Authorization: Bearer <key>``) and session authentication for the API."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from rest_framework import authentication, exceptions

from tracker import conf

KEYWORDS = ("bearer", "token")


class TokenAuthentication(authentication.BaseAuthentication):
    """Keys made by ``tracker token`` / :func:`tracker.services.access.create_token`.

    Accepts ``Authorization: Bearer <key>`` and ``Authorization: Token <key>``. Only the key's
    sha256 is stored, so a leaked database does not leak working keys.
    """

    keywords = KEYWORDS

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode("latin-1").lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header; send `Authorization: Bearer <token>`."
            )
        try:
            key = header[1].decode("ascii")
        except UnicodeError:
            raise exceptions.AuthenticationFailed("The token contains characters a token never has.") from None
        from tracker.services.access import authenticate_token

        found = authenticate_token(key, touch_interval=conf.get("API_TOKEN_TOUCH_INTERVAL"))
        if found is None:
            raise exceptions.AuthenticationFailed(
                "Invalid, expired or revoked token; create a new one with `tracker token`."
            )
        return found

    def authenticate_header(self, request: Any) -> str:
        # A WWW-Authenticate value makes DRF answer 401 (not 403) to anonymous requests.
        return 'Bearer realm="tracker"'


class SessionAuthentication(authentication.SessionAuthentication):
    """Django's login session (the browsable API, the admin); CSRF-checked for unsafe methods."""


# -- the hot paths' one-statement check ------------------------------------------------------


def bearer_key(request: Any) -> str | None:
    """The key of a well-formed ``Authorization: Bearer|Token <key>`` header, else None
    (no header, a session, a malformed one: :class:`TokenAuthentication` answers those)."""
    header = authentication.get_authorization_header(request).split()
    if len(header) != 2 or header[0].decode("latin-1").lower() not in KEYWORDS:
        return None
    try:
        return header[1].decode("ascii")
    except UnicodeError:
        return None


@dataclass(slots=True)
class Caller:
    """Who sent a request, and what they may do with the object it names."""

    user: Any
    #: The named object's primary key and project, None when no such object exists.
    object_pk: Any
    project_id: int | None
    #: The caller's role in that project (``admin`` for superusers), None for non-members.
    role: str | None
    #: Whether :func:`caller` made the ``write`` it was given.
    wrote: bool = False


@dataclass(frozen=True, slots=True)
class GuardedWrite:
    """A write :func:`caller` makes in the statement that checks the caller, only when the
    caller holds ``min_role`` in the object's project (or is a superuser).

    ``ctes(runs)`` returns ``WITH`` items (and their parameters) that write for the object in
    the CTE named ``runs`` (column ``id``) and write nothing when it is empty, e.g.
    :func:`tracker.services.metrics.guarded_write_ctes`.
    """

    min_role: str
    ctes: Callable[[str], "tuple[list[str], list[Any]]"]
    synchronous: bool = True


def caller(key: str, model: type, column: str, value: Any, *, write: GuardedWrite | None = None) -> Caller | None:
    """The user a token belongs to, the ``model`` row whose ``column`` is ``value``, and the
    user's role in that row's project: one statement instead of three.

    None when the token is unknown, revoked, expired or its user inactive, as
    :func:`tracker.services.access.authenticate_token` decides; each request asks the database
    (nothing is cached), so revoking a token or switching a user off takes effect at once in
    every server process. ``last_used_at`` is written by the same rule as there.

    ``write`` (PostgreSQL, outside a transaction): made by the same statement, guarded in SQL
    by the rules applied here, so check and write are one round trip; ``Caller.wrote`` says
    whether it was made. Elsewhere it is not made, and the caller writes after the check.
    """
    from django.contrib.auth import get_user_model
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.utils import timezone

    from tracker.models import ApiToken
    from tracker.services.access import has_role, hash_key

    if not key or len(key) > 200:
        return None
    conn = connections[DEFAULT_DB_ALIAS]
    conn.ensure_connection()
    now = timezone.now()
    # Validity and staleness are decided in SQL: a row of booleans converts several times faster
    # than one of timestamps, and this runs for every hot request.
    stamp = conn.ops.adapt_datetimefield_value(now)
    touch_before = conn.ops.adapt_datetimefield_value(now - timedelta(seconds=conf.get("API_TOKEN_TOUCH_INTERVAL")))
    check_params = [touch_before, value, hash_key(key), stamp]
    writing = write is not None and conn.vendor == "postgresql" and not conn.in_atomic_block
    if writing:
        row = _check_and_write(conn, model, column, check_params, write)  # type: ignore[arg-type]
    else:
        cur = conn.connection.cursor()
        try:
            cur.execute(_caller_sql(model, column, conn.vendor), check_params)
            row = cur.fetchone()
        finally:
            cur.close()
    if row is None:  # unknown, revoked or expired token, or an inactive user
        return None
    token_pk, stale, uid, username, staff, superuser, obj_pk, project_id, role = row
    if stale:
        ApiToken.objects.filter(pk=token_pk).update(last_used_at=now)
    User = get_user_model()
    # A partial instance (the other columns deferred), marked as loaded from the database.
    user = User.from_db(conn.alias, ["id"], [uid])
    setattr(user, User.USERNAME_FIELD, username)
    user.is_active, user.is_staff, user.is_superuser = True, bool(staff), bool(superuser)
    if obj_pk is not None and superuser:
        role = "admin"
    # The statement's guard applied these same rules: it wrote exactly when they let the caller.
    wrote = writing and obj_pk is not None and has_role(role, write.min_role)  # type: ignore[union-attr]
    return Caller(user, obj_pk, project_id, role, wrote)


def _check_and_write(conn: Any, model: type, column: str, check_params: list[Any], write: GuardedWrite) -> tuple | None:
    """The caller's row, and ``write`` made when the row allows it: one statement,
    ``WITH caller AS (...), allowed AS (...), <write's items> SELECT * FROM caller``."""
    from tracker.services.access import RANK, ROLES, check_role
    from tracker.services.metrics import one_trip

    roles = [r for r in ROLES if RANK[r] >= RANK[check_role(write.min_role)]]
    ctes, write_params = write.ctes("tracker_allowed")
    sql = (
        f"WITH tracker_caller AS ({_caller_sql(model, column, conn.vendor)}), "
        "tracker_allowed AS (SELECT c.obj AS id FROM tracker_caller c WHERE c.obj IS NOT NULL "
        f"AND (c.superuser OR c.role IN ({', '.join(['%s'] * len(roles))}))), "
        f"{', '.join(ctes)} SELECT * FROM tracker_caller"
    )
    rows = one_trip(conn, [sql], [*check_params, *roles, *write_params], synchronous=write.synchronous, fetch=0)
    return rows[0] if rows else None


@lru_cache(maxsize=16)
def _caller_sql(model: type, column: str, vendor: str) -> str:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from tracker.models import ApiToken, ProjectMembership

    User = get_user_model()
    q = connection.ops.quote_name
    u = {c: q(User._meta.get_field(c).column) for c in ("id", User.USERNAME_FIELD, "is_active", "is_staff", "is_superuser")}
    used, expires = q("last_used_at"), q("expires_at")
    sql = (
        f"SELECT t.{q('id')} AS token, (t.{used} IS NULL OR t.{used} < %s) AS stale, u.{u['id']} AS uid, "
        f"u.{u[User.USERNAME_FIELD]} AS username, u.{u['is_staff']} AS staff, "
        f"u.{u['is_superuser']} AS superuser, o.{q(model._meta.pk.column)} AS obj, "
        f"o.{q('project_id')} AS project, m.{q('role')} AS role "
        f"FROM {q(ApiToken._meta.db_table)} t JOIN {q(User._meta.db_table)} u ON u.{u['id']} = t.{q('user_id')} "
        f"LEFT JOIN {q(model._meta.db_table)} o ON o.{q(model._meta.get_field(column).column)} = %s "
        f"LEFT JOIN {q(ProjectMembership._meta.db_table)} m "
        f"ON m.{q('project_id')} = o.{q('project_id')} AND m.{q('user_id')} = t.{q('user_id')} "
        f"WHERE t.{q('key_hash')} = %s AND u.{u['is_active']} "
        f"AND (t.{expires} IS NULL OR t.{expires} > %s)"
    )
    return sql.replace("%s", "?") if vendor == "sqlite" else sql
