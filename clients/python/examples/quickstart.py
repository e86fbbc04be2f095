"""The README's quick start, runnable: a branch service (two steps and their compensations) served in this
process, and a saga through the coordinator at DTM (default http://127.0.0.1:36789/api/dtmsvr: `make run`).

    python clients/python/examples/quickstart.py [DTM]
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from fastdtm_client import BranchInfo, DtmClient, Failure, Saga
from fastdtm_client.starlette import branch_endpoint
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

DTM = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:36789/api/dtmsvr"
BUSI = "http://127.0.0.1:8082"


async def transfer(branch: BranchInfo, request: Request) -> None:
    body = await request.json()
    print(f"  {request.url.path:<16} gid={branch.gid} branch={branch.branch_id} op={branch.op} body={body}")
    if branch.op == "action" and body.get("amount", 0) > 100:
        raise Failure("amount over the limit")  # answered 409: the saga compensates (which must succeed)


routes = [
    Route(f"/{name}", branch_endpoint(transfer), methods=["POST"]) for name in ("out", "out-revert", "in", "in-revert")
]


async def main() -> None:
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=routes), port=8082, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    async with DtmClient(DTM) as dtm:
        for amount in (30, 500):
            gid = await dtm.new_gid()
            saga = Saga(dtm, gid)
            saga.add(f"{BUSI}/out", f"{BUSI}/out-revert", {"amount": amount})
            saga.add(f"{BUSI}/in", f"{BUSI}/in-revert", {"amount": amount})
            await saga.submit()
            status = ""
            while status not in ("succeed", "failed"):
                await asyncio.sleep(0.1)
                status = ((await dtm.query(gid))["transaction"] or {}).get("status", "")
            print(f"saga of {amount}: {status}")
    server.should_exit = True
    await serving


if __name__ == "__main__":
    asyncio.run(main())
