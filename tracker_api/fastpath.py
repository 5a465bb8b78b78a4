"""Lean answers for the hottest writes: a metric point, an annotation, one request each.

A training loop posting one point per step, or an annotator saving label after label, sends
small requests back to back, and through DRF's request machinery (content negotiation, parser
and authenticator objects, serializer fields built per request, three lookups for token,
object and role) the framework cost several times the write itself. :func:`route` puts a
plain function in front of such a route's DRF view. It answers the ordinary successful request
itself, with one statement for token, object and role; everything else - another method,
content type or ``Accept``, a session instead of a token, a bad token, an object the caller
may not write to, input the checks refuse - goes to the DRF view, which answers exactly as
before (its error bodies, its 401, 403 and 404). The DRF view stays the route's view for the
router, the OpenAPI schema and the body-size middleware.

:class:`HotPostMiddleware`, first in ``MIDDLEWARE``, lets those handlers answer before the rest
of the middleware chain and the URL resolver run (about 0.1 ms of a 1 ms request); it adds the
headers the skipped middleware would add (SecurityMiddleware's), and everything it does not
answer goes down the chain as usual. Without it the handlers still answer from the view.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any, NamedTuple

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from rest_framework.renderers import JSONRenderer

from tracker_api.authentication import bearer_key
from tracker_api.middleware import body_limit, declared_length

#: ``handler(request, key, **url_kwargs)``: an HttpResponse, or None to let the DRF view answer.
Handler = Callable[..., "HttpResponse | None"]

_ACCEPTS_JSON = {"", "*/*", "application/json"}
_JSON_TYPES = {"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"}
_render = JSONRenderer().render  # exactly the bytes DRF's default renderer writes


def route(view: Any, handler: Handler) -> Any:
    """``view`` (a DRF view function) with ``handler`` answering the POSTs it can."""
    headers = _default_headers(view)

    @wraps(view)
    def hot(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = _fast_answer(request, handler, headers, args, kwargs)
        return view(request, *args, **kwargs) if response is None else response

    hot.fast_handler, hot.fast_headers = handler, headers  # type: ignore[attr-defined]
    return hot


class _Hot(NamedTuple):
    handler: Handler
    headers: dict[str, str]
    kwargs: dict[str, Any]
    view: Any


class HotPostMiddleware:
    """Answers the POSTs a :func:`route` handler can answer before the rest of the middleware
    chain runs (put it first in ``MIDDLEWARE``); see the module's docstring."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        from django.middleware.security import SecurityMiddleware

        self.get_response = get_response
        self._security = SecurityMiddleware(get_response)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            hot = _hot_route(request.path_info, getattr(request, "urlconf", None))
            # A body over the limit, or an odd Content-Length, is the size middleware's to answer.
            length = declared_length(request)
            if hot is not None and length is not None and length <= body_limit(hot.view)[1]:
                response = _fast_answer(request, hot.handler, hot.headers, (), hot.kwargs)
                if response is not None:
                    return self._security.process_response(request, response)
        return self.get_response(request)


def _fast_answer(request: HttpRequest, handler: Handler, headers: dict[str, str], args: Any, kwargs: Any) -> HttpResponse | None:
    """``handler``'s answer with the view's headers; None for anything but a plain JSON POST
    with a Bearer token, or when the handler leaves the request to the DRF view."""
    if request.method != "POST" or not _plain_json(request):
        return None
    key = bearer_key(request)
    if key is None:
        return None
    response = handler(request, key, *args, **kwargs)
    if response is not None:
        for name, value in headers.items():
            response[name] = value
    return response


@lru_cache(maxsize=4096)  # a training loop posts to one path over and over
def _hot_route(path: str, urlconf: Any) -> _Hot | None:
    from django.urls import Resolver404, resolve

    try:
        match = resolve(path, urlconf)
    except Resolver404:
        return None
    handler = getattr(match.func, "fast_handler", None)
    if handler is None or match.args:
        return None
    return _Hot(handler, match.func.fast_headers, match.kwargs, match.func)


class FastPosts:
    """ViewSet mixin: ``fast_posts = {action: handler}`` puts :func:`route` with ``handler`` in
    front of each route whose POST is that action."""

    fast_posts: dict[str, Handler] = {}

    @classmethod
    def as_view(cls, actions: Any = None, **initkwargs: Any) -> Any:
        view = super().as_view(actions, **initkwargs)  # type: ignore[misc]
        handler = cls.fast_posts.get((actions or {}).get("post"))
        return view if handler is None else route(view, handler)


def _plain_json(request: HttpRequest) -> bool:
    """A JSON body that wants a JSON answer, as DRF's negotiation would pick for it."""
    meta = request.META
    return (
        meta.get("CONTENT_TYPE", "").lower() in _JSON_TYPES
        and meta.get("HTTP_ACCEPT", "").strip() in _ACCEPTS_JSON
        and "format=" not in meta.get("QUERY_STRING", "")  # DRF's ?format= override
    )


def _default_headers(view: Any) -> dict[str, str]:
    """The headers DRF adds to every answer of ``view`` (Allow, Vary), from a view instance
    set up the way DRF's own view function sets it up."""
    self = view.cls(**view.initkwargs)
    actions = dict(view.actions)
    if "get" in actions:
        actions.setdefault("head", actions["get"])
    for method, action in actions.items():
        setattr(self, method, getattr(self, action))
    return dict(self.default_response_headers)


def json_body(request: HttpRequest) -> Any:
    """The request's JSON, parsed as DRF's JSONParser parses it (UTF-8, no NaN or Infinity
    literals), or None where that parser would refuse the body."""
    try:
        return json.loads(request.body.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RequestDataTooBig):
        return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def answer(data: Any, status: int) -> HttpResponse:
    """``data`` as JSON with ``status``, byte for byte what DRF's JSONRenderer writes."""
    return HttpResponse(_render(data), status=status, content_type="application/json")
