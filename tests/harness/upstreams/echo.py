"""A plain HTTP upstream (an `http` Target): answers every request with a JSON echo."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"upstream": "echo", "method": request.method, "path": request.url.path})


def build_app() -> Starlette:
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    return Starlette(routes=[Route("/{path:path}", _echo, methods=methods)])
