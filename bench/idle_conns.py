#!/usr/bin/env python3
"""Opens N keep-alive client connections (HTTP/1.1, HTTP/1.1 over TLS with --tls, HTTP/2
over TLS with --h2) and leaves them idle: each sends one GET, reads the whole response and
stays open.

Prints `READY opened=N ok=M failed=K` once all are set up, then holds them until stdin
closes or --hold seconds pass. Loopback only; bounded in time.
"""
import argparse
import asyncio
import resource
import ssl
import sys
import time


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


async def h2_get(r, w, a):
    """One GET on stream 1 of a new HTTP/2 connection, read to its end; True if 200."""
    # :method GET, :scheme https, :path /, :authority localhost (HPACK, static table).
    block = bytes([0x82, 0x87, 0x84, 0x41, 9]) + b"localhost"
    w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
    status = None
    while True:
        head = await asyncio.wait_for(r.readexactly(9), a.timeout)
        n = int.from_bytes(head[:3], "big")
        kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7fffffff
        payload = await asyncio.wait_for(r.readexactly(n), a.timeout) if n else b""
        if kind == 4 and not flags & 1:
            w.write(frame(4, 1, 0))  # SETTINGS ack
        elif kind == 1 and stream == 1:
            # :status 200 is static index 8 (0x88).
            status = status or (payload[:1] == b"\x88")
            if flags & 1:
                return status
        elif kind == 0 and stream == 1 and flags & 1:
            return status
        elif kind in (3, 7):  # RST_STREAM, GOAWAY
            return False


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
        if a.h2:
            try:
                stats["ok" if await h2_get(r, w, a) else "failed"] += 1
            except Exception:
                stats["failed"] += 1
            return
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
    ap.add_argument("--h2", action="store_true", help="HTTP/2 over TLS (implies --tls)")
    ap.add_argument("--parallel", type=int, default=200)
    ap.add_argument("--hold", type=float, default=120.0)
    ap.add_argument("--timeout", type=float, default=20.0)
    a = ap.parse_args()
    if not a.host.startswith("127."):
        sys.exit("loopback only")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = None
    a.tls = a.tls or a.h2
    if a.tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"] if a.h2 else ["http/1.1"])
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
