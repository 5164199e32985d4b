"""The admin API (``/admin/*``), guarded by the ``admin.key`` bearer key.

Without a configured key the admin API is off and answers 403; a wrong or missing key
is 401 whether or not the path exists, and the comparison takes constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import orjson

from aigw.errors import AdminDisabled, AdminUnauthorized, RouteNotFound
from aigw.http.server import Request, Response


def admin_response(
    request: Request, key: bytes, views: dict[bytes, Callable[[], dict[str, Any]]]
) -> Response:
    if not key:
        raise AdminDisabled("the admin API is off: set admin.key in the settings")
    given = request.headers.get(b"authorization", b"")
    if not hmac.compare_digest(given, b"Bearer " + key):
        raise AdminUnauthorized("a valid admin key is required (Authorization: Bearer …)")
    view = views.get(request.path)
    if view is None:
        raise RouteNotFound(f"no route for {request.path.decode('latin-1')}")
    return Response(orjson.dumps(view(), option=orjson.OPT_INDENT_2))
