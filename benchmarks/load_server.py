"""Load-test the prediction server: N concurrent clients for a fixed time.

    python benchmarks/load_server.py --url http://127.0.0.1:8000 --clients 1 10 50
    python benchmarks/load_server.py RUN_DIR --clients 1 10 50     # starts its own server
    python benchmarks/load_server.py --clients 1 10 50             # trains a quick network first

Each client (a keep-alive connection) posts, back to back, what the drawing page posts: a 280x280 PNG drawing (an MNIST test
digit, dark on white) as multipart; `--payload json` posts 28x28 pixels instead. Reports requests/s,
p50 and p99 latency, and errors (any answer but 200, or a failed connection). A server this script
starts runs in its own process (so the client's Python does not share its GIL), but on a small
machine both still share the cores: the figures are for client and server on one host. A server
started here has no rate limit (every client comes from one address); one given by --url needs
`mnist-study serve RUN_DIR --max-requests-per-minute 0`. soak_server.py holds the load for minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server_process(run_dir: Path, port: int):
    """`serve(run_dir)` in a child process on 127.0.0.1:port, until the block ends; yields (url, pid).

    Its rate limit is off: every client of a load test comes from one address.
    """
    code = ("from mnist_study.serving.server import Limits, serve; "
            f"serve({str(run_dir)!r}, port={port}, log_level='warning', limits=Limits(requests_per_minute=0))")
    process = subprocess.Popen([sys.executable, "-c", code])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited with code {process.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not answer /health within 60 s")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def payloads(data_dir: str | None, kind: str, n: int = 64) -> list[tuple[str, bytes]]:
    """(content type, body) pairs built from MNIST test digits."""
    from PIL import Image

    from mnist_study.data.sources import load_dataset

    images = load_dataset(data_dir, download=False, progress=False).test_images[:n]
    if kind == "json":
        return [("application/json", json.dumps({"pixels": (im / 255.0).round(3).tolist()}).encode()) for im in images]
    bodies = []
    for im in images:
        buffer = io.BytesIO()
        Image.fromarray(255 - im).resize((280, 280), Image.Resampling.BICUBIC).save(buffer, format="PNG")
        boundary = "mnist-study-load-test"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"drawing.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + buffer.getvalue() + f"\r\n--{boundary}--\r\n".encode()
        bodies.append((f"multipart/form-data; boundary={boundary}", body))
    return bodies


def raw_request(host: str, path: str, content_type: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response with a Content-Length body; return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length")
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def load(url: str, clients: int, seconds: float, bodies: list[tuple[str, bytes]], model: str | None) -> dict:
    """`clients` keep-alive connections, each posting back to back for `seconds`.

    A bare asyncio HTTP/1.1 client rather than httpx: at 50 connections httpx's own overhead
    costs more CPU than the server's work, and client and server share the machine's cores.
    """
    parts = urlsplit(url)
    path = "/api/predict" + (f"?model={model}" if model else "")
    requests = [raw_request(parts.netloc, path, ctype, body) for ctype, body in bodies]
    latencies: list[float] = []
    errors = 0
    stop = 0.0

    async def client(k: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(requests[k % len(requests)])  # warm-up request, not counted
            await read_response(reader)
            await ready.wait()
            i = k
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    writer.write(requests[i % len(requests)])
                    ok = await read_response(reader) == 200
                except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                latencies.append(time.perf_counter() - start)
                errors += not ok
                i += clients
        finally:
            writer.close()

    ready = asyncio.Event()
    tasks = [asyncio.create_task(client(k)) for k in range(clients)]
    await asyncio.sleep(0.5)  # let every client connect and warm up
    start = time.perf_counter()
    stop = start + seconds
    ready.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    ms = 1000 * np.array(latencies)
    return {"clients": clients, "requests": len(ms), "rps": len(ms) / elapsed,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", help="run directory to serve (ignored with --url)")
    parser.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50], help="concurrent clients, one test each")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each test")
    parser.add_argument("--payload", choices=["png", "json"], default="png", help="what each request sends")
    parser.add_argument("--model", help="experiment to ask (default: the server's default)")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_STUDY_DATA"), help="where MNIST is")
    args = parser.parse_args()

    bodies = payloads(args.data_dir, args.payload)

    def run_all(url: str) -> None:
        print(f"{args.payload} payload, {args.seconds:g} s per test, {os.cpu_count()} cores, server at {url}")
        print(f"{'clients':>7}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for n in args.clients:
            r = asyncio.run(load(url, n, args.seconds, bodies, args.model))
            print(f"{r['clients']:>7}{r['requests']:>10}{r['rps']:>9.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['errors']:>8}")

    if args.url:
        run_all(args.url.rstrip("/"))
        return
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from predict_throughput import quick_run

        run_dir = quick_run(args.data_dir)
    with server_process(run_dir, free_port()) as (url, _):
        run_all(url)


if __name__ == "__main__":
    main()
