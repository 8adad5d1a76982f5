#!/usr/bin/env python3
"""The speed model against the sim device, strategy by strategy.

On the sim device the copy engine's bandwidth and latency are known (they
are configured) and its kernels are this CPU's, so the speed model
(plan::Predict with the sim costed as the host's kernels) can be checked
against a real run: for each strategy (stream, cpu, mixed with the split the
planner picks, and mixed with a fixed split) at batch 1 and 8, `ferry bench`
measures decode tokens/s and prints the prediction beside it. The target is
measured / predicted within 15 % (0.85..1.15). Run it on a quiet machine:
other processes on the cores slow the measured side only.

usage: tests/bench/placement_predictions.py --ferry build/release/service/ferry [--model M.gguf]
"""
import argparse
import json
import os
import subprocess
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--model", help="default: a 12-layer, 1024-wide q8_0 llama made with ferry make-model (~160 MB)")
    ap.add_argument("--device", default="sim:mem=1GiB,overhead=16MiB,h2d=2GB/s,lat=10us")
    ap.add_argument("--gpu_layers", type=int, default=4)
    ap.add_argument("--repetitions", type=int, default=3)
    args = ap.parse_args()
    model = args.model
    if model is None:
        model = os.path.join(tempfile.gettempdir(), "ferry-placement-predictions-q8_0.gguf")
        if not os.path.exists(model):
            subprocess.run([args.ferry, "make-model", f"--out={model}", "--layers=12", "--embd=1024", "--heads=8",
                            "--kv_heads=4", "--ff=2816", "--vocab=8192", "--type=q8_0"], check=True, capture_output=True)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"{model} on {args.device}, {args.gpu_layers} layers resident; load average {load} at the start")
    print(f"{'placement':<18} {'batch':>5} {'resident/cpu':>12} {'measured':>9} {'predicted':>9} {'ratio':>6}")
    worst = 0.0
    for label, flags in [("stream", ["--placement=stream"]), ("cpu", ["--placement=cpu"]),
                         ("mixed (planned)", ["--placement=mixed"]),
                         ("mixed, 4 on CPU", ["--placement=mixed", "--cpu_layers=4"])]:
        out = subprocess.run([args.ferry, "bench", f"--model={model}", f"--device={args.device}",
                              f"--gpu_layers={args.gpu_layers}", "--batches=1,8", "--prompt_tokens=16",
                              "--gen_tokens=32", "--ctx=64", f"--repetitions={args.repetitions}", "--json"] + flags,
                             check=True, capture_output=True, text=True).stdout
        for row in json.loads(out)["rows"]:
            ratio = row["decode_tokens_per_s"] / row["predicted_decode_tokens_per_s"]
            worst = max(worst, abs(ratio - 1))
            print(f"{label:<18} {row['batch']:>5} {str(row['resident_layers']) + '/' + str(row['cpu_layers']):>12} "
                  f"{row['decode_tokens_per_s']:>9.1f} {row['predicted_decode_tokens_per_s']:>9.1f} {ratio:>6.2f}")
    print(f"largest deviation from the prediction: {100 * worst:.0f} % (target: 15 %)")


if __name__ == "__main__":
    main()
