"""A minimal app model for tests of labsim.apps.serve: GET / answers with the container's args;
POST /stream answers at once with LINES lines of NDJSON, chunked, as Ollama's streamed answers are."""

import json

from aiohttp import web

from labsim.apps import serve

LINES = 40


async def stream(request: web.Request) -> web.StreamResponse:
    await request.json()
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for n in range(LINES):
        await response.write(json.dumps({"line": n, "done": n == LINES - 1}).encode() + b"\n")
    await response.write_eof()
    return response


async def goodbye(app: web.Application) -> None:
    print("cleaned up", flush=False)  # the model's cleanup ran, and what it wrote reached the log


def make_app(options) -> web.Application:
    app = web.Application()
    app.on_cleanup.append(goodbye)
    app.router.add_get("/", lambda request: web.json_response({"args": options.args}))
    app.router.add_post("/stream", stream)
    return app


if __name__ == "__main__":
    serve.main(make_app)
