#!/usr/bin/env python3
"""Connects many HTTP/1.1 clients to one proxy at the same moment, for the `memory-limit`
workload of `make bench` (scripts/bench/memory_limit.py).

    flood_clients.py PORT COUNT TIMEOUT_S

Every client connects, sends one small keep-alive GET, reads the whole response and closes —
all COUNT at once, so clients beyond the proxy's connection cap wait in the listen backlog (or
in SYN retries when the backlog is full) for a connection to end. Prints one JSON line:

- `ok`: a complete 200 response;
- `failed`: the request was written and the connection then ended (EOF, reset) or answered
  with something else than 200 — a request the proxy accepted and did not serve;
- `refused`: the connection could not be made (nothing written);
- `waiting`: no answer within TIMEOUT_S (still queued: not a failure of the proxy, but
  reported);
- the latency (connect to last byte) percentiles of the `ok` ones, in ms, and the seconds
  the whole flood took.
"""

import asyncio
import json
import resource
import sys
import time

REQUEST = b"GET /flood HTTP/1.1\r\nHost: bench\r\n\r\n"


async def one(port, timeout_s, began):
    written = False
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(REQUEST)
                await writer.drain()
                written = True
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                outcome = "ok" if status == b"200" else "failed"
                return outcome, time.monotonic() - began
            finally:
                writer.close()
    except TimeoutError:
        return "waiting", None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        return ("failed" if written else "refused"), None


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def main():
    port, count, timeout_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 100)), hard))
    began = time.monotonic()
    results = await asyncio.gather(*(one(port, timeout_s, began) for _ in range(count)))
    took = time.monotonic() - began
    outcomes = {k: 0 for k in ("ok", "failed", "refused", "waiting")}
    for outcome, _ in results:
        outcomes[outcome] += 1
    done = sorted(t * 1e3 for o, t in results if o == "ok")
    print(json.dumps({**outcomes, "seconds": round(took, 2),
                      "p50_ms": percentile(done, 0.5), "p99_ms": percentile(done, 0.99),
                      "max_ms": done[-1] if done else None}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
