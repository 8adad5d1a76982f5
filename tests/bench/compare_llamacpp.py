#!/usr/bin/env python3
"""ferry bench next to llama.cpp, side by side in one run, same file, same threads.

llama.cpp comes from the PyPI package llama-cpp-python (it builds llama.cpp
from source; ~6 minutes on 2 cores); deploy/install-deps.sh installs it
once per machine and links it as build/llama-venv. Run with that python:
    build/llama-venv/bin/python tests/bench/compare_llamacpp.py --ferry build/release/service/ferry \\
        [--model model.gguf ...] [--threads 2] [--batches 1,8]
Without --model: every weight type ferry runs (f32, f16, bf16, q4_0, q4_1,
q5_0, q5_1, q8_0, q4_K, q5_K, q6_K) in a 1.1B llama shape (TinyLlama's: 22
layers, 2048 wide, 32/4 heads, ff 5632, vocab 32000; random weights made
with ferry make-model into --models_dir when missing, ~12 GiB for all 11),
then the real files of the test setup in --real_models_dir (SmolLM2-135M
Q4_1 and Gemma 3 270M Q4_K_M, whole-model type mixes) where present.
Both engines do the same work: per batch size B, prefill B sequences of
--prompt_tokens tokens in steps of --step tokens, then --gen_tokens decode
steps of B tokens (one per sequence); best of --repetitions. The table gives
tokens/s and ferry/llama.cpp ratios, and names the CPU, the load average
before and after (other work on the machine moves the timings), and
llama.cpp's configuration.
"""
import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import llamacpp_ref  # noqa: E402


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def llamacpp_version():
    try:
        from importlib.metadata import version
        return "(llama-cpp-python " + version("llama_cpp_python") + ")"
    except Exception:  # noqa: BLE001: the version is only printed
        return "(version unknown)"


def llamacpp_defaults():
    """The context defaults the benchmark leaves as they are (KV cache types, flash attention)."""
    import llama_cpp as L
    cp = L.llama_context_default_params()
    ggml_types = {0: "f32", 1: "f16", 8: "q8_0", 30: "bf16"}
    flash = {-1: "auto", 0: "off", 1: "on"}
    return (f"KV cache {ggml_types.get(cp.type_k, cp.type_k)}/{ggml_types.get(cp.type_v, cp.type_v)}, "
            f"flash attention {flash.get(cp.flash_attn_type, cp.flash_attn_type)} (llama.cpp's defaults)")


def llamacpp_bench(path, threads, batches, prompt_tokens, gen_tokens, step, reps, extra_bufts):
    import llama_cpp as L
    model = llamacpp_ref.load(path, extra_bufts=extra_bufts)
    vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    rng = random.Random(1)
    rows = []
    for B in batches:
        cp = L.llama_context_default_params()
        cp.n_ctx = B * (prompt_tokens + gen_tokens + 1) + 64
        cp.n_batch = max(step, B)
        cp.n_ubatch = max(step, B)
        cp.n_seq_max = B
        cp.n_threads = threads
        cp.n_threads_batch = threads
        ctx = L.llama_init_from_model(model, cp)
        batch = L.llama_batch_init(max(step, B), 0, B)

        def decode(tokens):  # tokens: list of (id, seq, pos, logits)
            batch.n_tokens = len(tokens)
            for i, (tok, seq, pos, want) in enumerate(tokens):
                batch.token[i] = tok
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = 1 if want else 0
            if L.llama_decode(ctx, batch) != 0:
                raise SystemExit("llama_decode failed")
            L.llama_synchronize(ctx)

        decode([(1, 0, 0, True)])  # warm-up: touch the weights
        best_p = best_d = 0.0
        for _ in range(reps):
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            toks = [(rng.randrange(vocab), s, p, p + 1 == prompt_tokens) for s in range(B) for p in range(prompt_tokens)]
            t0 = time.perf_counter()
            for i in range(0, len(toks), step):
                decode(toks[i:i + step])
            t1 = time.perf_counter()
            for g in range(gen_tokens):
                decode([(rng.randrange(vocab), s, prompt_tokens + g, True) for s in range(B)])
            t2 = time.perf_counter()
            best_p = max(best_p, B * prompt_tokens / (t1 - t0))
            best_d = max(best_d, B * gen_tokens / (t2 - t1))
        rows.append({"batch": B, "prefill_tokens_per_s": best_p, "decode_tokens_per_s": best_d})
        L.llama_batch_free(batch)
        L.llama_free(ctx)
    L.llama_model_free(model)
    return rows


TYPES = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_K", "q5_K", "q6_K"]
SHAPE = ["--layers", "22", "--embd", "2048", "--heads", "32", "--kv_heads", "4", "--ff", "5632", "--vocab", "32000"]
REAL = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]


def default_models(ferry, models_dir, real_dir, types):
    """The 1.1B file of each type (made when missing), then the real files present."""
    os.makedirs(models_dir, exist_ok=True)
    paths = []
    for t in types:
        path = os.path.join(models_dir, f"llama1b-{t}.gguf")
        if not os.path.exists(path):
            print(f"making {path}", file=sys.stderr)
            subprocess.run([ferry, "make-model", f"--out={path}.tmp", f"--type={t}"] + SHAPE, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os.replace(path + ".tmp", path)
        paths.append(path)
    for name in REAL:
        path = os.path.join(real_dir, name)
        if os.path.exists(path):
            paths.append(path)
        else:
            print(f"note: {path} is missing (deploy/install-deps.sh --for-tests installs it); left out",
                  file=sys.stderr)
    return paths


def load_average():
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--model", action="append", help="GGUF file; repeat for several (default: see above)")
    ap.add_argument("--types", default=",".join(TYPES), help="the 1.1B files' types when no --model is given")
    ap.add_argument("--models_dir", default=os.path.join(root, "build", "bench"))
    ap.add_argument("--real_models_dir", default=os.path.join(root, "build", "models"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt_tokens", type=int, default=128)
    ap.add_argument("--gen_tokens", type=int, default=32)
    ap.add_argument("--step", type=int, default=64, help="prompt tokens per forward step (both engines)")
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--llama_extra_bufts", choices=["auto", "on", "off"], default="auto",
                    help="llama.cpp's extra CPU buffer types (weights repacked for its AMX / AVX-512 kernels): "
                         "auto = on where a probe in a child process shows they work on this machine (they crash "
                         "on some Intel Xeon VMs with AMX), off elsewhere")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    models = args.model or default_models(args.ferry, args.models_dir, args.real_models_dir,
                                          [t for t in args.types.split(",") if t])
    # Whether the extra buffer types work depends on the machine and on the
    # weights' types (which of them get repacked), so the probe is per file.
    if args.llama_extra_bufts == "auto":
        extra = {path: llamacpp_ref.extra_bufts_work(path) for path in models}
        why = "per file: where a probe in a child process loads the file and decodes with them, llama.cpp runs with and without them and the better figure counts (xbuf best), else without (off)"
    else:
        extra = {path: args.llama_extra_bufts == "on" for path in models}
        why = "as asked"
    print(f"CPU: {cpu_model()}, {os.cpu_count()} hardware threads, {args.threads} used by each engine; "
          f"load average {load_average()} at the start")
    print(f"prompt {args.prompt_tokens} tokens/sequence in steps of {args.step}, {args.gen_tokens} decode steps, "
          f"best of {args.repetitions}; pp = prefill tok/s, tg = decode tok/s")
    print(f"llama.cpp {llamacpp_version()}: extra CPU buffer types (repacked weights; column xbuf) {why}; "
          f"n_batch = n_ubatch = the step; {llamacpp_defaults()}")
    print(f"{'model':<32} {'xbuf':>4} {'batch':>5} {'ferry pp':>10} {'llama pp':>10} {'ratio':>6} "
          f"{'ferry tg':>10} {'llama tg':>10} {'ratio':>6}", flush=True)
    for path in models:
        out = subprocess.run([args.ferry, "bench", f"--model={path}", "--json", f"--threads={args.threads}",
                              f"--batches={args.batches}", f"--prompt_tokens={args.prompt_tokens}",
                              f"--gen_tokens={args.gen_tokens}", f"--batch={args.step}",
                              f"--repetitions={args.repetitions}"],
                             check=True, capture_output=True, text=True).stdout
        ours = {r["batch"]: r for r in json.loads(out)["rows"]}
        # Where the extra buffer types work, llama.cpp runs both ways and
        # each figure is the better of the two (on this project's Xeon VM
        # its repacked f16 / bf16 weights decode several times slower).
        theirs = {}
        for use_extra in ([True, False] if extra[path] else [False]):
            for r in llamacpp_bench(path, args.threads, batches, args.prompt_tokens, args.gen_tokens, args.step,
                                    args.repetitions, use_extra):
                best = theirs.setdefault(r["batch"], dict(r))
                for key in ("prefill_tokens_per_s", "decode_tokens_per_s"):
                    best[key] = max(best[key], r[key])
        for b in batches:
            o, t = ours[b], theirs[b]
            print(f"{os.path.basename(path):<32} {'best' if extra[path] else 'off':>4} {b:>5} "
                  f"{o['prefill_tokens_per_s']:>10.1f} "
                  f"{t['prefill_tokens_per_s']:>10.1f} {o['prefill_tokens_per_s'] / t['prefill_tokens_per_s']:>6.2f} "
                  f"{o['decode_tokens_per_s']:>10.2f} {t['decode_tokens_per_s']:>10.2f} "
                  f"{o['decode_tokens_per_s'] / t['decode_tokens_per_s']:>6.2f}", flush=True)
    print(f"load average {load_average()} at the end")


if __name__ == "__main__":
    main()
