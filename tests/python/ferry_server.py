"""Helpers for the Python tests that talk to a running `ferry serve`: Python
stubs generated from proto/ with grpcio-tools, and a server process on free
ports that is stopped on exit."""
import os
import re
import subprocess
import sys
import time

from grpc_tools import protoc


def load_stubs(proto_dir, workdir):
    gen = os.path.join(workdir, "gen")
    os.makedirs(gen, exist_ok=True)
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={gen}", f"--grpc_python_out={gen}",
                      os.path.join(proto_dir, "ferry/v1/inference.proto")])
    if rc != 0:
        raise RuntimeError("grpcio-tools could not compile the proto")
    sys.path.insert(0, gen)
    from ferry.v1 import inference_pb2, inference_pb2_grpc
    return inference_pb2, inference_pb2_grpc


def stories_shaped_model(ferry, workdir):
    """A model of stories260K's shape with make-model's random weights (as
    tests/shared_models.h's StoriesShape: llama, 5 layers, embd 64, ff 172,
    8/4 heads, vocab 512, f32): the fast model of the server tests."""
    path = os.path.join(workdir, "stories-shaped-f32.gguf")
    subprocess.run([ferry, "make-model", f"--out={path}", "--arch=llama", "--layers=5", "--embd=64", "--heads=8",
                    "--kv_heads=4", "--ff=172", "--vocab=512", "--context=2048", "--type=f32", "--weights_seed=260"],
                   check=True, capture_output=True)
    return path


def reference_greedy(reference_dump, model, tokens, n, min_margin=1e-3):
    """The double-precision reference's greedy continuation (tests/tools/
    reference_dump); every step's top-2 margin must clear min_margin, or the
    golden would not be one."""
    import numpy as np
    tokens = list(tokens)
    out = []
    for _ in range(n):
        raw = subprocess.run([reference_dump, model] + [str(t) for t in tokens], check=True,
                             capture_output=True).stdout
        z = np.frombuffer(raw, dtype="<f4").reshape(len(tokens), -1)[-1]
        top = np.sort(z)[-2:]
        if top[1] - top[0] <= min_margin:
            raise RuntimeError(f"the reference's step {len(out)} is a near-tie ({top[1] - top[0]:.2e})")
        out.append(int(np.argmax(z)))
        tokens.append(out[-1])
    return out


class Server:
    """`ferry serve --port 0 --metrics_port 0 ARGS`, waited for until it serves."""

    def __init__(self, ferry, args, timeout=60):
        self.proc = subprocess.Popen([ferry, "serve", "--port", "0", "--metrics_port", "0"] + args,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.port = self.metrics_port = None
        self.output = ""
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output += line
            m = re.search(r"listening on [^ ]*:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            m = re.search(r"metrics on http://[^:]+:(\d+)/metrics", line)
            if m:
                self.metrics_port = int(m.group(1))
            if "ferry: serving" in line:
                return
        self.stop()
        raise RuntimeError(f"the server did not start:\n{self.output}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
