"""Soak: `ferry serve` on the sim device with streamed layers, under `ferry
loadgen` with cancels, sessions and malformed calls mixed in, for a given
time. Reports the server's RSS, open fds and threads after a warm-up and at
the end (growth beyond the bounds below fails the run), the load's outcomes
by status code, the metrics port's answers along the way, and whether a
greedy request gives the same text at the end as at the start. Not in CI:
run it by hand, for 30 minutes or more.

usage: python tests/soak/soak.py --ferry build/release/service/ferry --duration 1800
       (a Python with grpcio and grpcio-tools: build/venv from deploy/install-deps.sh --for-tests)

Bounds, end against the start after the warm-up: RSS within +10 % + 32 MiB
(allocator caches settle), fds within +8, threads within +8 (gRPC's
executor threads come and go with load).
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import grpc  # noqa: E402

import ferry_server  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def figures(pid):
    status = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss": rss, "fds": fds, "threads": threads}


def fmt(f):
    return f"RSS {f['rss'] / 2**20:.1f} MiB, {f['fds']} fds, {f['threads']} threads"


def greedy(pb, stub):
    req = pb.GenerateRequest(text="Once upon a time", max_tokens=48, ignore_eos=True,
                             sampling=pb.SamplingParams(temperature=0))
    text, ids = "", []
    for m in stub.Generate(req, timeout=60):
        text += m.text
        ids += list(m.token_ids)
    return text, ids


def loadgen(ferry, port, seconds, seed):
    cmd = [ferry, "loadgen", "--target", f"127.0.0.1:{port}", "--duration", str(seconds), "--concurrency", "12",
           "--connections", "4", "-n", "48", "--temperature", "0.7", "--cancel_fraction", "0.2", "--sessions", "6",
           "--malformed_fraction", "0.1", "--seed", str(seed)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def probe(port, path):
    t0 = time.time()
    try:
        code = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
    except Exception as e:  # noqa: BLE001
        code = repr(e)
    return code, time.time() - t0


def half_open(ports, hold_s):
    """8 sockets on each port that send half a request and hold it."""
    socks = []
    for port, start in ports:
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(start)
            socks.append(s)
    time.sleep(hold_s)
    for s in socks:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--duration", type=float, default=1800)
    ap.add_argument("--warmup", type=float, default=30)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="ferry-soak-")
    os.makedirs(work, exist_ok=True)
    pb, pbg = ferry_server.load_stubs(os.path.join(ROOT, "proto"), work)

    model = os.path.join(work, "soak.gguf")
    subprocess.run([args.ferry, "make-model", "--out", model, "--layers", "6", "--embd", "256", "--heads", "8",
                    "--kv_heads", "4", "--ff", "704", "--vocab", "2048", "--type", "q8_0"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server_args = ["--model", model, "--device", "sim:mem=64MiB,overhead=0,h2d=4GB/s", "--gpu_layers", "3",
                   "--placement", "stream",
                   "--slots", "4", "--max_queue", "32", "--ctx", "512"]
    failures = []
    with ferry_server.Server(args.ferry, server_args) as server:
        pid = server.proc.pid
        print(f"soak: ferry serve pid {pid} on :{server.port} (metrics :{server.metrics_port}), "
              f"{' '.join(server_args)}")
        drain = threading.Thread(target=lambda: [None for _ in server.proc.stdout], daemon=True)
        drain.start()
        stub = pbg.InferenceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        golden = greedy(pb, stub)
        loaded = figures(pid)
        print(f"soak: loaded: {fmt(loaded)}")

        warm = loadgen(args.ferry, server.port, args.warmup, 1)
        warm.communicate()
        start = figures(pid)
        print(f"soak: after {args.warmup:.0f} s of warm-up: {fmt(start)}")

        main_load = loadgen(args.ferry, server.port, args.duration, 2)
        t0 = time.time()
        peak = dict(start)
        probes, slow_probes, bad_probes = 0, 0, 0
        next_sample = t0
        while main_load.poll() is None:
            time.sleep(1)
            now = time.time()
            if now >= next_sample:
                f = figures(pid)
                for k in peak:
                    peak[k] = max(peak[k], f[k])
                print(f"soak: {now - t0:6.0f} s: {fmt(f)}", flush=True)
                next_sample = now + 60
                # Half-open connections on both ports for 5 s, probes meanwhile.
                holder = threading.Thread(target=half_open, args=(
                    [(server.metrics_port, b"GET /hea"), (server.port, b"PRI * HTTP/2.0\r\n")], 5))
                holder.start()
                time.sleep(0.5)
                for path in ("/healthz", "/readyz", "/metrics"):
                    code, seconds = probe(server.metrics_port, path)
                    probes += 1
                    bad_probes += code != 200
                    slow_probes += seconds >= 1.0
                holder.join()
        out, _ = main_load.communicate()
        elapsed = time.time() - t0
        print("soak: loadgen:\n  " + out.strip().replace("\n", "\n  "))
        time.sleep(2)
        stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
        end = figures(pid)
        after = greedy(pb, stub)

        print(f"soak: {elapsed:.0f} s of load")
        print(f"soak: start {fmt(start)}")
        print(f"soak: peak  {fmt(peak)}")
        print(f"soak: end   {fmt(end)}")
        print(f"soak: server stats at the end: running {stats.running}, waiting {stats.waiting}, "
              f"KV {stats.kv_tokens_used}, {stats.requests_finished} requests finished, {stats.steps} steps, "
              f"{stats.generated_tokens} tokens generated, {stats.stream_bytes / 2**30:.1f} GiB streamed")
        print(f"soak: probes beside half-open sockets: {probes}, not 200: {bad_probes}, 1 s or slower: {slow_probes}")
        if end["rss"] > start["rss"] * 1.10 + 32 * 2**20:
            failures.append(f"RSS grew from {start['rss'] / 2**20:.1f} to {end['rss'] / 2**20:.1f} MiB")
        if end["fds"] > start["fds"] + 8:
            failures.append(f"fds grew from {start['fds']} to {end['fds']}")
        if end["threads"] > start["threads"] + 8:
            failures.append(f"threads grew from {start['threads']} to {end['threads']}")
        if stats.running or stats.waiting or stats.kv_tokens_used:
            failures.append("requests or KV left behind after the load")
        if after != golden:
            failures.append(f"the greedy text changed:\n  before {golden[0]!r}\n  after  {after[0]!r}")
        else:
            print(f"soak: greedy text at the end equals the start's ({len(golden[1])} tokens)")
        if bad_probes or slow_probes:
            failures.append(f"{bad_probes} probes failed and {slow_probes} took 1 s or more")
        m = re.search(r"requests: (\d+) ok((?:, \d+ [A-Z_]+)*)", out)
        if not m:
            failures.append("no loadgen report")
        elif m.group(2):
            failures.append(f"unexpected errors:{m.group(2)}")
        mix = re.search(r"sent malformed, answered((?: \d+ [A-Z_]+)*)", out)
        if mix and re.search(r"\d+ (?!INVALID_ARGUMENT)[A-Z_]+", mix.group(1)):
            failures.append(f"malformed requests answered otherwise than INVALID_ARGUMENT:{mix.group(1)}")
    for f in failures:
        print("FAIL:", f)
    print("soak:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
