#!/usr/bin/env python3
"""Holds many idle keep-alive HTTP/1.1 client connections open against one proxy, for the
`idle` workload of `make bench`.

    idle_clients.py PORT COUNT SECONDS

Opens COUNT connections (a few hundred at a time, so the listen backlog never overflows),
sends one small GET on each and reads its response — a keep-alive connection that has been used,
as a real client leaves it — then prints `ready` and holds them all for SECONDS. At the end it
prints one JSON line: how many were opened, failed, and closed by the proxy meanwhile.
"""

import asyncio
import json
import resource
import sys
import time

REQUEST = b"GET /idle HTTP/1.1\r\nHost: bench\r\n\r\n"


async def open_one(port, held):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        writer.write(REQUEST)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await asyncio.wait_for(reader.readexactly(length), 10)
        held.append((reader, writer))
        return True
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
        return False


async def main():
    port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 100)), hard))
    held, failed = [], 0
    began = time.monotonic()
    for start in range(0, count, 250):
        results = await asyncio.gather(*(open_one(port, held)
                                         for _ in range(min(250, count - start))))
        failed += results.count(False)
    opening_s = time.monotonic() - began
    print("ready", flush=True)
    await asyncio.sleep(seconds)
    closed = 0
    for reader, _ in held:
        # A connection the proxy closed has its EOF (or a reset) waiting to be read.
        try:
            data = await asyncio.wait_for(reader.read(1), 0.001)
            closed += data == b""
        except asyncio.TimeoutError:
            pass
        except OSError:
            closed += 1
    for _, writer in held:
        writer.close()
    print(json.dumps({"opened": len(held), "failed": failed, "closed_by_proxy": closed,
                      "opening_s": round(opening_s, 3)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
