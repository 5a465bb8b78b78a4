"""Token (``Authorization: Bearer <key>``) and session authentication for the API."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions

from tracker import conf


class TokenAuthentication(authentication.BaseAuthentication):
    """Keys made by ``tracker token`` / :func:`tracker.services.access.create_token`.

    Accepts ``Authorization: Bearer <key>`` and ``Authorization: Token <key>``. Only the key's
    sha256 is stored, so a leaked database does not leak working keys.
    """

    keywords = ("bearer", "token")

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
