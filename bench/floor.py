"""The floor: a bare Starlette app on uvicorn answering the invocation route with the
same JSON success envelope wtpy sends for the sample rule, without running any hook.

Run by bench/run.py as `python bench/floor.py PORT`; same uvicorn settings as `wtpy serve`
(uvloop, httptools, no access log).
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ENVELOPE = orjson.dumps(
    {
        "statusCode": 200,
        "headers": {},
        "status": "success",
        "data": {"https://foo.com/claim": "bar", "scope": ["test", "extra"]},
    }
)


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def run(request: Request) -> Response:
    await request.body()  # read the body, as wtpy does; no parsing, no hook
    return Response(ENVELOPE, media_type="application/json")


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/api/run/{container}/{name}", run, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
    )
