#!/usr/bin/env python3
"""ferry bench next to llama.cpp, side by side in one run, same file, same threads.

llama.cpp comes from the PyPI package llama-cpp-python (it builds llama.cpp
from source; ~6 minutes on 2 cores); deploy/install-deps.sh installs it
once per machine and links it as build/llama-venv. Run with that python:
    build/llama-venv/bin/python tests/bench/compare_llamacpp.py --ferry build/release/service/ferry \\
        --model model.gguf [--threads 2] [--batches 1,8]
Both engines do the same work: per batch size B, prefill B sequences of
--prompt_tokens tokens in steps of --step tokens, then --gen_tokens decode
steps of B tokens (one per sequence); best of --repetitions. The table gives
tokens/s and ferry/llama.cpp ratios.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--model", required=True, action="append", help="GGUF file; repeat for several")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt_tokens", type=int, default=128)
    ap.add_argument("--gen_tokens", type=int, default=32)
    ap.add_argument("--step", type=int, default=64, help="prompt tokens per forward step (both engines)")
    ap.add_argument("--repetitions", type=int, default=2)
    ap.add_argument("--llama_extra_bufts", choices=["auto", "on", "off"], default="auto",
                    help="llama.cpp's extra CPU buffer types (weights repacked for its AMX / AVX-512 kernels): "
                         "auto = on where a probe in a child process shows they work on this machine (they crash "
                         "on some Intel Xeon VMs with AMX), off elsewhere")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.llama_extra_bufts == "auto":
        extra = llamacpp_ref.extra_bufts_work(args.model[0])
        why = "they work on this machine" if extra else "they crash on this machine"
    else:
        extra, why = args.llama_extra_bufts == "on", "as asked"
    print(f"CPU: {cpu_model()}, {args.threads} threads; prompt {args.prompt_tokens} tokens/sequence, "
          f"{args.gen_tokens} decode steps, best of {args.repetitions}")
    print(f"llama.cpp {llamacpp_version()}: extra CPU buffer types (repacked weights) "
          f"{'on' if extra else 'off'} ({why})")
    print(f"{'model':<28} {'batch':>5} {'ferry pp':>10} {'llama pp':>10} {'ratio':>6} "
          f"{'ferry tg':>10} {'llama tg':>10} {'ratio':>6}")
    for path in args.model:
        out = subprocess.run([args.ferry, "bench", f"--model={path}", "--json", f"--threads={args.threads}",
                              f"--batches={args.batches}", f"--prompt_tokens={args.prompt_tokens}",
                              f"--gen_tokens={args.gen_tokens}", f"--batch={args.step}",
                              f"--repetitions={args.repetitions}"],
                             check=True, capture_output=True, text=True).stdout
        ours = {r["batch"]: r for r in json.loads(out)["rows"]}
        theirs = {r["batch"]: r for r in llamacpp_bench(path, args.threads, batches, args.prompt_tokens,
                                                        args.gen_tokens, args.step, args.repetitions, extra)}
        for b in batches:
            o, t = ours[b], theirs[b]
            print(f"{os.path.basename(path):<28} {b:>5} {o['prefill_tokens_per_s']:>10.1f} "
                  f"{t['prefill_tokens_per_s']:>10.1f} {o['prefill_tokens_per_s'] / t['prefill_tokens_per_s']:>6.2f} "
                  f"{o['decode_tokens_per_s']:>10.2f} {t['decode_tokens_per_s']:>10.2f} "
                  f"{o['decode_tokens_per_s'] / t['decode_tokens_per_s']:>6.2f}")


if __name__ == "__main__":
    main()
