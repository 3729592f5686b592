"""Serve the function under uvicorn for the benchmark's comparison run.

`jan-server serve --server uvicorn` passes the bound ``Function.handle`` to uvicorn,
whose interface detection takes a bound method for ASGI2; naming ``asgi3`` here avoids
that until the CLI does.
"""

from __future__ import annotations

import os

import uvicorn

from functions.entry import new

if __name__ == "__main__":
    host, _, port = os.environ["LISTEN_ADDRESS"].rpartition(":")
    uvicorn.run(
        new().handle, host=host, port=int(port), interface="asgi3", log_config=None,
        access_log=False,
    )  # fmt: skip
