"""ferry's metrics as Prometheus sees them. Starts `ferry serve` (a model of stories260K's shape
on the sim device with 3 of 5 layers resident, so streaming metrics move)
and a real Prometheus server (Debian's package) on loopback with a generated
config, sends concurrent requests through grpcio, then checks:
  - /healthz and /readyz answer 200;
  - `promtool check metrics` accepts a scrape taken after real traffic;
  - through Prometheus's query API, ferry_generation_tokens_total rose by
    exactly the completion tokens the requests reported, and the memory and
    layer gauges equal GetModelInfo's figures;
  - histogram invariants over scrapes taken during the load: within a scrape
    buckets are cumulative and le="+Inf" equals _count; between scrapes no
    bucket decreases;
  - the Grafana dashboard (deploy/grafana/ferry.json): every metric name in
    every query is one the live scrape exports, and every query is accepted
    by Prometheus's query API.

usage: prometheus_check.py FERRY PROTO_DIR DASHBOARD WORKDIR SHARED_MODELS_DIR
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import grpc

import ferry_server


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def parse_metrics(text):
    """{(name, frozenset(labels)): value} and {name: type}."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        if not m:
            raise ValueError(f"unparsable sample line: {line!r}")
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        samples[(m.group(1), labels)] = float(m.group(4))
    return samples, types


def histogram_problems(samples, types):
    problems = []
    for name, kind in types.items():
        if kind != "histogram":
            continue
        series = {}
        for (n, labels), v in samples.items():
            if n == name + "_bucket":
                le = dict(labels)["le"]
                rest = frozenset(x for x in labels if x[0] != "le")
                series.setdefault(rest, []).append((float("inf") if le == "+Inf" else float(le), v))
        for rest, buckets in series.items():
            buckets.sort()
            values = [v for _, v in buckets]
            if any(b < a for a, b in zip(values, values[1:])):
                problems.append(f"{name}{dict(rest)}: buckets not cumulative: {values}")
            count = samples.get((name + "_count", rest))
            if buckets[-1][0] != float("inf") or count is None or values[-1] != count:
                problems.append(f"{name}{dict(rest)}: +Inf bucket {values[-1]} != _count {count}")
    return problems


class Prometheus:
    def __init__(self, workdir, target):
        self.port = free_port()
        data = os.path.join(workdir, "tsdb")
        shutil.rmtree(data, ignore_errors=True)
        config = os.path.join(workdir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: ferry\n    static_configs:\n"
                    f"      - targets: ['{target}']\n")
        self.log = open(os.path.join(workdir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, expr):
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url)
        return json.loads(body) if body.startswith("{") else {"status": "error", "error": body}

    def value(self, expr):
        r = self.query(expr)
        if r.get("status") != "success" or not r["data"]["result"]:
            return None
        return float(r["data"]["result"][0]["value"][1])

    def wait(self, pred, what, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if pred():
                    return True
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        print(f"FAIL: timed out waiting for {what}")
        return False

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def main():
    ferry, proto_dir, dashboard, workdir = sys.argv[1:5]
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            print(f"FAIL: {tool} not found (Debian package 'prometheus'; deploy/install-deps.sh installs it)")
            return 1
    os.makedirs(workdir, exist_ok=True)
    model = ferry_server.stories_shaped_model(ferry, workdir)
    pb, pbg = ferry_server.load_stubs(proto_dir, workdir)
    failures = []
    args = ["--model", model, "--ctx", "256", "--slots", "4", "--gpu_layers", "3",
            "--device", "sim:mem=64MiB,overhead=8MiB,h2d=0.05GB/s,lat=5us",
            "--placement", "mixed", "--cpu_layers", "1"]  # of the 2 layers not resident: 1 streamed, 1 on the CPU
    with ferry_server.Server(ferry, args) as server:
        metrics_url = f"http://127.0.0.1:{server.metrics_port}"
        for path in ("/healthz", "/readyz"):
            status, body = http_get(metrics_url + path)
            if status != 200:
                failures.append(f"{path}: {status} {body!r}")
        prom = Prometheus(workdir, f"127.0.0.1:{server.metrics_port}")
        try:
            if not prom.wait(lambda: prom.value('up{job="ferry"}') == 1, "Prometheus to scrape ferry"):
                return 1
            before = prom.value("ferry_generation_tokens_total")
            channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
            stub = pbg.InferenceStub(channel)

            # Load: 8 clients x 3 requests, while a scraper collects /metrics.
            scrapes, stop = [], threading.Event()

            def scrape():
                while not stop.is_set():
                    scrapes.append(http_get(metrics_url + "/metrics")[1])
                    time.sleep(0.02)

            completion, lock = [], threading.Lock()

            def client(i):
                for j in range(3):
                    req = pb.GenerateRequest(text=["Once upon a time", "The cat", "Tom and Sue"][j], max_tokens=10 + 7 * i,
                                             sampling=pb.SamplingParams(temperature=0.7), seed=i * 10 + j)
                    last = None
                    for msg in stub.Generate(req, timeout=120):
                        last = msg
                    with lock:
                        completion.append(last.usage.completion_tokens)

            scraper = threading.Thread(target=scrape)
            scraper.start()
            clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
            for t in clients:
                t.start()
            for t in clients:
                t.join()
            stop.set()
            scraper.join()
            generated = sum(completion)
            want = before + generated
            if not prom.wait(lambda: prom.value("ferry_generation_tokens_total") == want,
                             f"ferry_generation_tokens_total == {before} + {generated}"):
                failures.append(f"ferry_generation_tokens_total is {prom.value('ferry_generation_tokens_total')}, "
                                f"want {want} ({generated} tokens generated)")

            # Memory gauges against GetModelInfo.
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            expect = {
                "ferry_gpu_memory_total_bytes": info.memory.total_bytes,
                'ferry_gpu_memory_planned_bytes{category="weights_resident"}': info.memory.weights_resident_bytes,
                'ferry_gpu_memory_planned_bytes{category="staging"}': info.memory.staging_bytes,
                'ferry_gpu_memory_planned_bytes{category="kv_cache"}': info.memory.kv_cache_bytes,
                'ferry_gpu_memory_planned_bytes{category="workspace"}': info.memory.workspace_bytes,
                'ferry_gpu_memory_planned_bytes{category="overhead"}': info.memory.overhead_bytes,
                "ferry_pinned_host_memory_bytes": info.memory.pinned_host_bytes,
                'ferry_layers{placement="resident"}': info.layers_resident,
                'ferry_layers{placement="streamed"}': info.layers_streamed,
                'ferry_layers{placement="cpu"}': info.layers_cpu,
                "ferry_gpu_memory_used_bytes": info.memory.used_bytes,
            }
            for expr, value in expect.items():
                got = prom.value(expr)
                if got != value:
                    failures.append(f"{expr} = {got}, GetModelInfo says {value}")
            if (info.layers_streamed != 1 or info.layers_cpu != 1 or info.memory.staging_bytes == 0
                    or info.memory.pinned_host_bytes == 0):
                failures.append(f"the placement is not the one asked for: {info}")
            if not (prom.value("ferry_stream_bytes_total") or 0) > 0:
                failures.append("no streamed bytes counted")
            if not (prom.value("ferry_compute_seconds_total") or 0) > 0:
                failures.append("no compute time counted")
            if not (prom.value("ferry_cpu_compute_seconds_total") or 0) > 0:
                failures.append("no CPU compute time counted for the layer on the CPU")

            # promtool on a scrape after real traffic.
            final = http_get(metrics_url + "/metrics")[1]
            p = subprocess.run(["promtool", "check", "metrics"], input=final, capture_output=True, text=True)
            if p.returncode != 0:
                failures.append(f"promtool check metrics: {p.stdout}{p.stderr}")

            # Histograms, within and between scrapes.
            scrapes.append(final)
            previous = None
            for text in scrapes:
                samples, types = parse_metrics(text)
                failures += histogram_problems(samples, types)
                if previous is not None:
                    for key, v in previous.items():
                        if key[0].endswith("_bucket") and samples.get(key, v) < v:
                            failures.append(f"{key[0]}{dict(key[1])} went down from {v} to {samples[key]}")
                previous = samples
            print(f"{len(scrapes)} scrapes during the load; {generated} tokens generated by {len(completion)} requests")

            # The dashboard: names from the live scrape, queries through Prometheus.
            _, types = parse_metrics(final)
            exported = set()
            for name, kind in types.items():
                exported.add(name)
                if kind == "histogram":
                    exported |= {name + "_bucket", name + "_sum", name + "_count"}
            with open(dashboard) as f:
                dash = json.load(f)
            exprs = [t["expr"] for panel in dash["panels"] for t in panel.get("targets", [])]
            variables = {v["name"] for v in dash["templating"]["list"]}
            if not {"datasource", "namespace", "pod"} <= variables or not dash.get("uid"):
                failures.append(f"dashboard variables {variables} / uid {dash.get('uid')!r}")
            for expr in exprs:
                for name in set(re.findall(r"\bferry_[a-z0-9_]+", expr)):
                    if name not in exported:
                        failures.append(f"dashboard query uses {name}, which ferry does not export: {expr}")
                concrete = (expr.replace("$__rate_interval", "1m").replace("$namespace", ".*").replace("$pod", ".*"))
                r = prom.query(concrete)
                if r.get("status") != "success":
                    failures.append(f"Prometheus refuses the dashboard query {concrete}: {r.get('error')}")
            print(f"dashboard: {len(exprs)} queries checked against {len(exported)} exported names")
            channel.close()
        finally:
            prom.stop()
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
