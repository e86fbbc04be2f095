"""A small real DTM participant (branch) service for the Locust load test.

Every request, whatever its method or path, is answered ``200 {"dtm_result":"SUCCESS"}`` over HTTP/1.1 with
keep-alive: the saga actions and compensations, the msg branch and its ``query_prepared`` check-back, and the TCC
try/confirm/cancel calls all succeed. It keeps no state. aiohttp (dev extra) on uvloop.

Run: ``python loadtest/participant.py --port 8081`` (then ``FASTDTM_PARTICIPANT=http://127.0.0.1:8081``).
For the cheapest possible branch side in benchmarks see ``bench/branch_server.py``.
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

BODY = b'{"dtm_result":"SUCCESS"}'


async def succeed(request: web.Request) -> web.Response:
    # Read the body so the connection stays reusable whatever the client sent.
    await request.read()
    return web.Response(body=BODY, content_type="application/json")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", succeed)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="fastdtm load test participant: every request succeeds")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    print(f"participant listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
