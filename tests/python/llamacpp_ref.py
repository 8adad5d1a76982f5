"""llama.cpp (through llama-cpp-python) as the tests' reference and the benchmark peer.

One place that loads a model into llama.cpp with the configuration ferry's
tests use. llama.cpp's extra CPU buffer types (weights repacked for its
AMX / AVX-512 kernels) crash on some of this project's machines (Intel Xeon
VMs with AMX: SIGSEGV inside llama.cpp, even on an f32 model), so the
reference never uses them; the benchmark uses them only where a probe in a
child process shows they work (extra_bufts_work), since they are part of
llama.cpp's real speed there.
"""
import os
import subprocess
import sys

import llama_cpp as L

_initialized = False


def load(path, extra_bufts=False, vocab_only=False):
    """A llama_model* for `path` on the CPU; SystemExit when llama.cpp refuses it."""
    global _initialized
    if not _initialized:
        L.llama_backend_init()
        _initialized = True
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 0
    mp.use_extra_bufts = bool(extra_bufts)
    mp.vocab_only = bool(vocab_only)
    model = L.llama_model_load_from_file(os.fsencode(path), mp)
    if not model:
        raise SystemExit(f"llama.cpp could not load {path}")
    return model


def extra_bufts_work(path):
    """Whether llama.cpp survives loading `path` with its extra buffer types and decoding a token.

    Run in a child process: where they crash, they crash the process."""
    # A prompt batch of 64 tokens, then single-token steps: repacked kernels
    # take both paths, and some crash only on one.
    code = ("import sys; sys.path.insert(0, %r); import llamacpp_ref as R, llama_cpp as L\n"
            "m = R.load(%r, extra_bufts=True)\n"
            "cp = L.llama_context_default_params(); cp.n_ctx = 128; cp.n_batch = 64; cp.n_ubatch = 64\n"
            "ctx = L.llama_init_from_model(m, cp)\n"
            "ok = L.llama_decode(ctx, L.llama_batch_get_one((L.llama_token * 64)(*([1] * 64)), 64)) == 0\n"
            "for i in range(4): ok = ok and L.llama_decode(ctx, L.llama_batch_get_one((L.llama_token * 1)(1), 1)) == 0\n"
            "sys.exit(0 if ok else 3)\n") % (os.path.dirname(os.path.abspath(__file__)), path)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True)
    return r.returncode == 0


def tokenize(vocab, text, add_special, parse_special):
    """llama_tokenize of `text` (str) with the vocabulary `vocab`."""
    data = text.encode("utf-8")
    n = max(16, len(data) + 16)
    while True:
        buf = (L.llama_token * n)()
        got = L.llama_tokenize(vocab, data, len(data), buf, n, add_special, parse_special)
        if got >= 0:
            return list(buf[:got])
        n = -got
