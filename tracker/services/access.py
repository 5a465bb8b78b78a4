"""Who may do what: users, hashed API tokens, per-project roles and the checks that use them.

Roles are ordered ``viewer < annotator < editor < admin``. A user sees a project only through a
membership (superusers see every project). Checks answer :class:`ProjectNotFound` for a project
the user cannot see, so callers cannot tell "hidden" from "absent", and
:class:`PermissionDenied` when the project is visible but the role is too low.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from tracker.exceptions import Conflict, InvalidValue, NotFound, PermissionDenied, ProjectNotFound
from tracker.models import ApiToken, Project, ProjectMembership

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

ROLES = ("viewer", "annotator", "editor", "admin")
RANK = {role: n for n, role in enumerate(ROLES)}
TOKEN_PREFIX = "trk_"


class UserNotFound(NotFound):
    """No user has that name or id."""


class TokenNotFound(NotFound):
    """No token matches (or it belongs to someone else)."""


# -- users -----------------------------------------------------------------------------------


def get_user(user: Any) -> Any:
    """The user object for a user, a username or a primary key; raises :class:`UserNotFound`."""
    User = get_user_model()
    if isinstance(user, User):
        return user
    if isinstance(user, bool) or not isinstance(user, (str, int)):
        raise InvalidValue(f"A user is given as a username or an id, not {type(user).__name__}.")
    lookup = {"pk": user} if isinstance(user, int) else {User.USERNAME_FIELD: user}
    try:
        return User.objects.get(**lookup)
    except User.DoesNotExist:
        raise UserNotFound(
            f"There is no user {user!r}. Create one with `tracker createuser NAME` or "
            f"tracker.services.access.create_user()."
        ) from None


def create_user(
    username: str,
    *,
    password: str | None = None,
    email: str = "",
    is_staff: bool = False,
    is_superuser: bool = False,
) -> Any:
    """Create a user.

    Args:
        username: the login name (unique).
        password: the password for session (browser) login; None makes a token-only user.
        email: optional address.
        is_staff: may manage users through the API.
        is_superuser: sees and administers every project.

    Returns:
        The new user.

    Raises:
        InvalidValue: the name is empty or too long.
        Conflict: a user with that name exists.
    """
    User = get_user_model()
    if not isinstance(username, str) or not username.strip():
        raise InvalidValue(f"A username must be a non-empty string, not {username!r}.")
    username = username.strip()
    max_len = User._meta.get_field(User.USERNAME_FIELD).max_length or 150
    if len(username) > max_len:
        raise InvalidValue(f"A username has at most {max_len} characters; got {len(username)}.")
    try:
        User._meta.get_field(User.USERNAME_FIELD).run_validators(username)
    except ValidationError as exc:
        raise InvalidValue(f"The username {username!r} is not allowed: {' '.join(exc.messages)}") from None
    try:
        with transaction.atomic():
            user = User(**{User.USERNAME_FIELD: username}, email=email or "")
            user.is_staff = bool(is_staff or is_superuser)
            user.is_superuser = bool(is_superuser)
            if password:
                user.set_password(password)
            else:
                user.set_unusable_password()
            user.save()
    except IntegrityError:
        raise Conflict(
            f"A user named {username!r} already exists; pick another name or create a token "
            f"for the existing user."
        ) from None
    return user


# -- tokens ----------------------------------------------------------------------------------


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_token(
    user: Any, *, name: str = "", expires_in: timedelta | float | None = None
) -> tuple[ApiToken, str]:
    """Create an API token for ``user``; only its sha256 is stored.

    Args:
        user: a user, username or id.
        name: a label to recognise the token by ("laptop", "ci").
        expires_in: lifetime as a timedelta or seconds; None never expires.

    Returns:
        ``(token, key)``: the stored row and the secret key, which is shown this once.

    Raises:
        UserNotFound: no such user.
        InvalidValue: the name is too long or the lifetime is not positive.
    """
    user = get_user(user)
    if not isinstance(name, str) or len(name) > 200:
        raise InvalidValue("A token name is a string of at most 200 characters.")
    expires_at = None
    if expires_in is not None:
        seconds = expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise InvalidValue(f"expires_in must be a positive number of seconds, not {expires_in!r}.")
        expires_at = timezone.now() + timedelta(seconds=seconds)
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=key[:12], key_hash=hash_key(key), expires_at=expires_at
    )
    return token, key


def authenticate_token(key: str, *, touch_interval: float = 60.0) -> tuple[Any, ApiToken] | None:
    """The ``(user, token)`` a key belongs to, or None for an unknown, expired or inactive one.

    ``last_used_at`` is written at most every ``touch_interval`` seconds, so a busy client
    does not turn every read into a write.
    """
    if not isinstance(key, str) or not key or len(key) > 200:
        return None
    token = _token_with_user(hash_key(key))
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.expires_at is not None and token.expires_at <= now:
        return None
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > touch_interval:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token.user, token


def _token_with_user(key_hash: str) -> ApiToken | None:
    """The token row and its user in one plain SQL query.

    Runs on every API request: a fixed statement skips the ORM's query compilation, which
    costs more than the indexed lookup itself.
    """
    from django.db import connection

    User = get_user_model()
    q = connection.ops.quote_name
    t, u = ApiToken._meta.db_table, User._meta.db_table
    user_cols = ["id", User.USERNAME_FIELD, "is_active", "is_staff", "is_superuser"]
    sql = (
        f"SELECT t.{q('id')}, t.{q('name')}, t.{q('prefix')}, t.{q('created_at')}, "
        f"t.{q('last_used_at')}, t.{q('expires_at')}, "
        + ", ".join(f"u.{q(User._meta.get_field(c).column)}" for c in user_cols)
        + f" FROM {q(t)} t JOIN {q(u)} u ON u.{q(User._meta.pk.column)} = t.{q('user_id')}"
        f" WHERE t.{q('key_hash')} = %s"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [key_hash])
        row = cur.fetchone()
    if row is None:
        return None
    conv = connection.ops.convert_datetimefield_value if connection.vendor == "sqlite" else None
    created, used, expires = row[3:6]
    if conv is not None:  # SQLite returns text; PostgreSQL already gives aware datetimes
        created, used, expires = (conv(v, None, connection) for v in (created, used, expires))
    uid, username, active, staff, superuser = row[6:]
    # Partial instances (the other columns deferred), marked as loaded from the database.
    user = User.from_db(connection.alias, ["id"], [uid])
    setattr(user, User.USERNAME_FIELD, username)
    user.is_active, user.is_staff, user.is_superuser = bool(active), bool(staff), bool(superuser)
    token = ApiToken(
        id=row[0], name=row[1], prefix=row[2], created_at=created, last_used_at=used,
        expires_at=expires, user_id=uid, key_hash=key_hash,
    )
    token._state.adding, token._state.db = False, connection.alias
    token.user = user
    return token


def list_tokens(user: Any) -> QuerySet[ApiToken]:
    """The tokens of ``user``, newest first (hashes only; keys are never stored)."""
    return ApiToken.objects.filter(user=get_user(user)).order_by("-created_at", "-id")


def revoke_token(token: ApiToken | int | str, *, user: Any = None) -> None:
    """Delete a token so its key stops working at once.

    Args:
        token: the token, its id, its full key or its 12-character prefix.
        user: if given, the token must belong to this user (else :class:`TokenNotFound`).

    Raises:
        TokenNotFound: no such token (for this user).
        Conflict: a prefix matches several tokens; pass the id instead.
    """
    qs = ApiToken.objects.all()
    if user is not None:
        qs = qs.filter(user=get_user(user))
    if isinstance(token, ApiToken):
        qs = qs.filter(pk=token.pk)
    elif isinstance(token, int) and not isinstance(token, bool):
        qs = qs.filter(pk=token)
    elif isinstance(token, str) and token.startswith(TOKEN_PREFIX) and len(token) > 12:
        qs = qs.filter(key_hash=hash_key(token))
    elif isinstance(token, str) and token:
        qs = qs.filter(prefix=token)
    else:
        raise InvalidValue(f"Name a token by its id, key or prefix, not {token!r}.")
    matches = list(qs.values_list("pk", flat=True)[:2])
    if not matches:
        raise TokenNotFound(f"No token matches {str(token)[:12]!r}; list them with `tracker token --list`.")
    if len(matches) > 1:
        raise Conflict(f"Several tokens start with {token!r}; revoke by id instead.")
    ApiToken.objects.filter(pk=matches[0]).delete()


# -- roles -----------------------------------------------------------------------------------


def check_role(role: Any) -> str:
    if role not in RANK:
        raise InvalidValue(f"Unknown role {role!r}; roles are {', '.join(ROLES)}.")
    return role


def memberships(user: Any) -> dict[int, str]:
    """``{project_id: role}`` for every project ``user`` is a member of (one query)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return {}
    return dict(ProjectMembership.objects.filter(user=user).values_list("project_id", "role"))


def visible_projects(user: Any, min_role: str = "viewer") -> QuerySet[Project]:
    """Projects ``user`` holds at least ``min_role`` in (all of them for a superuser)."""
    check_role(min_role)
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    roles = ROLES[RANK[min_role] :]
    return Project.objects.filter(memberships__user=user, memberships__role__in=roles)


def project_ids_with_role(user: Any, min_role: str = "viewer") -> QuerySet:
    """A subquery of project ids (never evaluated here) for filtering other tables."""
    check_role(min_role)
    roles = ROLES[RANK[min_role] :]
    return ProjectMembership.objects.filter(user=user, role__in=roles).values("project_id")


def role_of(user: Any, project: Project | int) -> str | None:
    """The role ``user`` has in ``project`` (``admin`` for superusers), or None."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    if user.is_superuser:
        return "admin"
    pid = project.pk if isinstance(project, Project) else project
    return ProjectMembership.objects.filter(user=user, project_id=pid).values_list("role", flat=True).first()


def has_role(role: str | None, min_role: str) -> bool:
    return role is not None and RANK[role] >= RANK[check_role(min_role)]


def require_role(user: Any, project: Project | str | int, min_role: str, *, role: str | None = None) -> Project:
    """The project, if ``user`` holds at least ``min_role`` in it.

    Args:
        user: the acting user.
        project: a project, its name or its id.
        min_role: the lowest role allowed.
        role: the user's role if already known (saves a query).

    Raises:
        ProjectNotFound: the project does not exist or the user is not a member (the same
            answer for both, so names of other teams' projects do not leak).
        PermissionDenied: the user is a member with a lower role.
    """
    check_role(min_role)
    if isinstance(project, Project):
        proj = project
    else:
        lookup = {"pk": project} if isinstance(project, int) and not isinstance(project, bool) else {"name": project}
        proj = Project.objects.filter(**lookup).first()
    if proj is not None and role is None:
        role = role_of(user, proj)
    if proj is None or role is None:
        raise ProjectNotFound(
            f"There is no project {project if isinstance(project, (str, int)) else proj.name!r} "
            f"that you are a member of. Ask one of its admins to add you, or check the name."
        )
    if not has_role(role, min_role):
        raise PermissionDenied(
            f"This needs the {min_role} role in project {proj.name!r}; you are {role}. Ask a "
            f"project admin to raise your role."
        )
    return proj


def set_role(project: Project | str | int, user: Any, role: str) -> ProjectMembership:
    """Make ``user`` a member of ``project`` with ``role`` (changing an existing role).

    Raises:
        ProjectNotFound, UserNotFound: no such project or user.
        InvalidValue: unknown role.
        Conflict: the change would leave the project without an admin.
    """
    check_role(role)
    user = get_user(user)
    proj = _project(project)
    with transaction.atomic():
        member = ProjectMembership.objects.select_for_update().filter(project=proj, user=user).first()
        if member is None:
            return ProjectMembership.objects.create(project=proj, user=user, role=role)
        if member.role == "admin" and role != "admin":
            _keep_an_admin(proj, user)
        member.role = role
        member.save(update_fields=["role"])
        return member


def remove_member(project: Project | str | int, user: Any) -> None:
    """Remove ``user`` from ``project``.

    Raises:
        NotFound: the user is not a member.
        Conflict: they are the project's last admin.
    """
    user = get_user(user)
    proj = _project(project)
    with transaction.atomic():
        member = ProjectMembership.objects.select_for_update().filter(project=proj, user=user).first()
        if member is None:
            raise NotFound(f"{user.get_username()!r} is not a member of project {proj.name!r}.")
        if member.role == "admin":
            _keep_an_admin(proj, user)
        member.delete()


def create_project(name: str, user: Any, *, description: str = "", metadata: dict | None = None) -> Project:
    """Create a project with ``user`` as its first admin.

    Raises:
        InvalidValue: a bad name or metadata.
        Conflict: the name is taken.
    """
    from tracker.services.projects import check_project_name

    name = check_project_name(name)
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidValue("A project's metadata must be a dict.")
    try:
        with transaction.atomic():
            proj = Project.objects.create(
                name=name, description=description or "", metadata=metadata or {}
            )
            if user is not None and not getattr(user, "is_superuser", False):
                ProjectMembership.objects.create(project=proj, user=user, role="admin")
    except IntegrityError:
        raise Conflict(f"The project name {name!r} is taken; choose another name.") from None
    return proj


def _project(project: Project | str | int) -> Project:
    if isinstance(project, Project):
        return project
    lookup = {"pk": project} if isinstance(project, int) and not isinstance(project, bool) else {"name": project}
    proj = Project.objects.filter(**lookup).first()
    if proj is None:
        raise ProjectNotFound(f"There is no project {project!r}.")
    return proj


def _keep_an_admin(project: Project, leaving: Any) -> None:
    others = ProjectMembership.objects.filter(project=project, role="admin").exclude(user=leaving)
    if not others.exists():
        raise Conflict(
            f"{leaving.get_username()!r} is the last admin of project {project.name!r}; make "
            f"someone else admin first."
        )


def token_expired(token: ApiToken, now: datetime | None = None) -> bool:
    return token.expires_at is not None and token.expires_at <= (now or timezone.now())


def update_user(user: Any, **fields: Any) -> Any:
    """Change a user's ``email``, ``password``, ``is_active``, ``is_staff`` or ``is_superuser``.

    Raises:
        UserNotFound: no such user.
        InvalidValue: an unknown field.
    """
    user = get_user(user)
    allowed = {"email", "password", "is_active", "is_staff", "is_superuser"}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise InvalidValue(f"Cannot change {', '.join(unknown)}; changeable: {', '.join(sorted(allowed))}.")
    for name, value in fields.items():
        if name == "password":
            if value:
                user.set_password(value)
            else:
                user.set_unusable_password()
        else:
            setattr(user, name, value)
    if user.is_superuser:
        user.is_staff = True
    user.save()
    return user


def deactivate_user(user: Any) -> Any:
    """Switch a user off: their tokens and sessions stop working; their annotations stay."""
    user = get_user(user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    return user
