#!/usr/bin/env python3
"""ferry's byte-level BPE tokenizer against Hugging Face's `tokenizers`.

For the Llama 3 and the Qwen2 pre-tokenizer, trains a small byte-level BPE
with the `tokenizers` library (the family's split regex, byte-level mapping,
special tokens; Llama 3's "ignore_merges"), converts it to GGUF metadata as
llama.cpp's converter does (tokens, types, merges, tokenizer.ggml.pre), and
compares token ids on a fixed corpus, English-like sentences, random
mixed-script Unicode, and text with special tokens inside. Any mismatch fails.
"""
import json
import os
import subprocess
import sys

try:
    import gguf
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
except ImportError as e:
    print(f"FAIL: {e}; install tests/requirements.txt (deploy/install-deps.sh does)", file=sys.stderr)
    sys.exit(1)

sys.path.insert(0, os.path.dirname(__file__))
import unicode_corpus  # noqa: E402

# The split patterns as the model families publish them in tokenizer.json.
PATTERNS = {
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]


def build(pre, corpus):
    tok = Tokenizer(models.BPE(ignore_merges=(pre == "llama-bpe")))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERNS[pre]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return tok


def to_gguf(tok, pre, out):
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for piece, i in vocab.items():
        tokens[i] = piece
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    types = [3 if t in SPECIALS else 1 for t in tokens]
    w = gguf.GGUFWriter(out, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|begin_of_text|>"])
    w.add_eos_token_id(vocab["<|end_of_text|>"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return len(tokens), len(merges)


def main():
    tool, workdir = sys.argv[1], sys.argv[2]
    os.makedirs(workdir, exist_ok=True)
    corpus = unicode_corpus.FIXED + unicode_corpus.english_like(4000, seed=11) + unicode_corpus.random_strings(400, seed=12)
    texts = (unicode_corpus.FIXED + unicode_corpus.english_like(2000, seed=13)
             + unicode_corpus.random_strings(3000, seed=14)
             + ["hello<|eot_id|>world", "<|begin_of_text|>Hi<|end_of_text|>", "a<|eot_id|><|eot_id|> b",
                "<|eot_id", "it's IT'S We'Re 12345678 don'T"])
    failed = False
    for pre in PATTERNS:
        tok = build(pre, corpus)
        path = os.path.join(workdir, f"bpe-{pre}.gguf")
        n_vocab, n_merges = to_gguf(tok, pre, path)
        stdin = "".join(t.encode("utf-8").hex() + "\n" for t in texts)
        out = subprocess.run([tool, path], input=stdin, capture_output=True, text=True, check=True).stdout
        ours = [[int(x) for x in line.split()] for line in out.split("\n")[: len(texts)]]
        mismatches = 0
        n_tokens = 0
        for text, mine in zip(texts, ours):
            theirs = tok.encode(text, add_special_tokens=False).ids
            n_tokens += len(theirs)
            if mine != theirs:
                mismatches += 1
                if mismatches <= 5:
                    print(f"MISMATCH [{pre}] {text!r}\n  ferry {mine}\n  hf    {theirs}")
        print(f"{'ok' if mismatches == 0 else 'FAIL'}: {pre}: {len(texts)} strings, {n_tokens} tokens, "
              f"{mismatches} mismatches (vocab {n_vocab}, {n_merges} merges)")
        failed |= mismatches > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
