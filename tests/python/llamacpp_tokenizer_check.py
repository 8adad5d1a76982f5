#!/usr/bin/env python3
"""ferry's tokenizer against llama.cpp's on a real model's vocabulary.

llama.cpp (llama-cpp-python, the model loaded with vocab_only) tokenizes a
corpus of code, numbers, whitespace runs, non-Latin scripts, random Unicode,
long texts and text with the vocabulary's special tokens inside, as its
server tokenizes a prompt (parse_special, no BOS); ferry's `tokenize_lines`
tool tokenizes the same strings from the same GGUF file. Any difference
fails, and so does a missing model file: the test setup always installs the
models (deploy/install-deps.sh --for-tests).

usage: llamacpp_tokenizer_check.py TOKENIZE_LINES MODEL.gguf
"""
import os
import random
import subprocess
import sys

try:
    import llama_cpp as L
except ImportError as e:
    print(f"FAIL: {e}: needs llama-cpp-python (deploy/install-deps.sh builds it into build/llama-venv)",
          file=sys.stderr)
    sys.exit(1)

sys.path.insert(0, os.path.dirname(__file__))
import llamacpp_ref  # noqa: E402
import unicode_corpus  # noqa: E402


def special_texts(vocab, rng):
    """Texts with the vocabulary's control and user-defined tokens inside."""
    attr_special = L.LLAMA_TOKEN_ATTR_CONTROL | L.LLAMA_TOKEN_ATTR_USER_DEFINED
    specials = []
    for i in range(L.llama_vocab_n_tokens(vocab)):
        if L.llama_vocab_get_attr(vocab, i) & attr_special:
            text = L.llama_vocab_get_text(vocab, i).decode("utf-8", errors="replace")
            if text:
                specials.append(text)
    picked = specials[:24] + rng.sample(specials, min(40, len(specials)))
    words = ["Hello", " world", "\n", "  ", "x", "123", "日本", " <", ">", "user\n", ""]
    out = []
    for s in picked:
        out.append(s)
        out.append(f"{rng.choice(words)}{s}{rng.choice(words)}")
        out.append(s + s + rng.choice(words) + rng.choice(picked))
    for _ in range(40):
        out.append("".join(rng.choice(picked) if rng.random() < 0.4 else rng.choice(words) for _ in range(8)))
    return out, len(specials)


def main():
    tool, path = sys.argv[1], sys.argv[2]
    if not os.path.exists(path):
        print(f"FAIL: {path} is missing (deploy/install-deps.sh --for-tests installs it)")
        return 1
    model = llamacpp_ref.load(path, vocab_only=True)
    vocab = L.llama_model_get_vocab(model)
    rng = random.Random(5)
    with_specials, n_specials = special_texts(vocab, rng)
    texts = (unicode_corpus.FIXED + unicode_corpus.MIXED + unicode_corpus.english_like(1500, seed=21)
             + unicode_corpus.random_strings(2000, seed=22) + with_specials
             + ["".join(unicode_corpus.MIXED) * 4, " ".join(unicode_corpus.english_like(400, seed=23))])
    # The tool reads one hex line per text.
    stdin = "".join(t.encode("utf-8").hex() + "\n" for t in texts)
    r = subprocess.run([tool, path], input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL: ferry could not tokenize with {path}: {r.stderr.strip()}")
        return 1
    ours = [[int(x) for x in line.split()] for line in r.stdout.split("\n")[: len(texts)]]
    mismatches = 0
    n_tokens = 0
    for text, mine in zip(texts, ours):
        theirs = llamacpp_ref.tokenize(vocab, text, add_special=False, parse_special=True)
        n_tokens += len(theirs)
        if mine != theirs:
            mismatches += 1
            if mismatches <= 5:
                print(f"MISMATCH {text[:200]!r}\n  ferry    {mine[:60]}\n  llama.cpp {theirs[:60]}")
    L.llama_model_free(model)
    print(f"{'ok' if mismatches == 0 else 'FAIL'}: {os.path.basename(path)}: {len(texts)} strings "
          f"({len(with_specials)} with some of its {n_specials} special tokens), {n_tokens} tokens, "
          f"{mismatches} mismatches")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
