#!/usr/bin/env python3
"""Opens N keep-alive client connections (HTTP/1.1, or HTTP/1.1 over TLS with --tls) and
leaves them idle: each sends one GET, reads the whole response and stays open.

Prints `READY opened=N ok=M failed=K` once all are set up, then holds them until stdin
closes or --hold seconds pass. Loopback only; bounded in time.
"""
import argparse
import asyncio
import resource
import ssl
import sys
import time


async def one(a, ctx, sem, conns, stats):
    async with sem:
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(a.host, a.port, ssl=ctx, server_hostname="localhost" if ctx else None),
                a.timeout)
        except Exception:
            stats["failed"] += 1
            return
        conns.append(w)
        try:
            w.write(b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle-conns\r\n\r\n")
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), a.timeout)
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":", 1)[1])
            if n:
                await asyncio.wait_for(r.readexactly(n), a.timeout)
            stats["ok" if head.startswith(b"HTTP/1.1 200") else "failed"] += 1
        except Exception:
            stats["failed"] += 1


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--parallel", type=int, default=200)
    ap.add_argument("--hold", type=float, default=120.0)
    ap.add_argument("--timeout", type=float, default=20.0)
    a = ap.parse_args()
    if not a.host.startswith("127."):
        sys.exit("loopback only")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = None
    if a.tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
    sem = asyncio.Semaphore(a.parallel)
    conns, stats = [], {"ok": 0, "failed": 0}
    t0 = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one(a, ctx, sem, conns, stats) for _ in range(a.n))), a.hold)
    print(f"READY opened={len(conns)} ok={stats['ok']} failed={stats['failed']} "
          f"setup_s={time.monotonic() - t0:.1f}", flush=True)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read),
                               max(1.0, a.hold - (time.monotonic() - t0)))
    except asyncio.TimeoutError:
        pass
    for w in conns:
        w.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    finally:
        sys.stdout.flush()
    import os
    os._exit(0)
