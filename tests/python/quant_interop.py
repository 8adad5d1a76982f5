#!/usr/bin/env python3
"""ferry's block decoding against gguf-py's numpy implementation.

quant_sample writes random blocks of each type and ferry's decoding of them;
gguf.quants.dequantize (written independently of ferry) decodes the same
bytes. The two must agree bit for bit.
"""
import subprocess
import sys

try:
    import gguf
    import numpy as np
except ImportError as e:
    print(f"FAIL: {e}; install tests/requirements.txt (deploy/install-deps.sh does)", file=sys.stderr)
    sys.exit(1)


def main():
    tool, path = sys.argv[1], sys.argv[2]
    subprocess.check_call([tool, path])
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    failed = False
    for name, t in tensors.items():
        if not name.startswith("q."):
            continue
        ours = np.asarray(tensors["deq." + name[2:]].data, dtype=np.float32).reshape(-1)
        raw = np.asarray(t.data).view(np.uint8).reshape(-1)
        theirs = gguf.quants.dequantize(raw, t.tensor_type).astype(np.float32).reshape(-1)
        same = np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))
        worst = float(np.max(np.abs(ours - theirs))) if not same else 0.0
        print(f"{'ok' if same else 'FAIL'}: {name[2:]}: {ours.size} values"
              + ("" if same else f", {int(np.sum(ours != theirs))} differ, worst {worst:g}"))
        failed |= not same
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
