#!/usr/bin/env python3
"""Slowloris clients for the `slowloris` workload of `make bench`: many connections, each
trickling an HTTP request one byte a second, so none ever finishes its head.

    trickle_clients.py PORT COUNT SECONDS

Opens COUNT connections (a few hundred at a time, so the listen backlog never overflows) and
sends each one's first byte, prints `ready`, then keeps trickling for SECONDS. A connection the
proxy closes is opened again at once (an attacker keeps the pressure up). At the end it prints
one JSON line: connections opened in all, how many the proxy closed, how many of those it
answered `408` first, and how many failed to connect.
"""

import asyncio
import json
import resource
import sys
import time

# Longer than any window this runs for at one byte a second: the head never completes.
REQUEST = (b"GET /slow HTTP/1.1\r\nHost: bench\r\nUser-Agent: trickle/1\r\n"
           b"X-Padding: " + b"a" * 64 + b"\r\n\r\n")


class Tally:
    def __init__(self):
        self.opened = self.closed = self.answered_408 = self.failed = 0


async def one_client(port, tally, until, first_byte_sent):
    """Trickles on one connection after another until `until` (monotonic seconds)."""
    signalled = False
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, asyncio.TimeoutError):
            tally.failed += 1
            await asyncio.sleep(1)
            continue
        tally.opened += 1
        answer = asyncio.ensure_future(reader.read(64))
        try:
            for i in range(len(REQUEST)):
                writer.write(REQUEST[i:i + 1])
                await writer.drain()
                if not signalled:
                    first_byte_sent.release()
                    signalled = True
                done, _ = await asyncio.wait({answer}, timeout=1.0)
                if done or time.monotonic() >= until:
                    break
            if answer.done():
                data = answer.result()
                tally.closed += 1
                tally.answered_408 += data.startswith(b"HTTP/1.1 408")
        except (OSError, ConnectionError):
            tally.closed += 1
        finally:
            answer.cancel()
            writer.close()
    if not signalled:
        first_byte_sent.release()


async def main():
    port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 100)), hard))
    tally = Tally()
    started = asyncio.Semaphore(0)
    # Generous: the clients start trickling now and run until `ready` + SECONDS.
    until = time.monotonic() + seconds + 60
    clients = []
    for start in range(0, count, 250):
        batch = min(250, count - start)
        clients += [asyncio.ensure_future(one_client(port, tally, until, started))
                    for _ in range(batch)]
        for _ in range(batch):
            await started.acquire()
    print("ready", flush=True)
    await asyncio.sleep(seconds)
    for client in clients:
        client.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    print(json.dumps({"opened": tally.opened, "closed_by_proxy": tally.closed,
                      "answered_408": tally.answered_408, "failed": tally.failed}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
