"""A minimal app model for tests of labsim.apps.serve: GET / answers with the container's args."""

from aiohttp import web

from labsim.apps import serve


def make_app(options) -> web.Application:
    app = web.Application()
    app.router.add_get("/", lambda request: web.json_response({"args": options.args}))
    return app


if __name__ == "__main__":
    serve.main(make_app)
