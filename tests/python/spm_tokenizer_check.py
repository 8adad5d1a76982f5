#!/usr/bin/env python3
"""ferry's SentencePiece-style tokenizer against the sentencepiece library.

Trains a small BPE model with sentencepiece (seeded corpus, the options
Llama's tokenizer uses: byte fallback, identity normalization, dummy prefix,
digits split), converts it to GGUF tokenizer metadata as llama.cpp's
converter does, and compares token ids on a fixed corpus and thousands of
random Unicode strings. Any mismatch fails.
"""
import os
import subprocess
import sys

try:
    import gguf
    import sentencepiece as spm
except ImportError as e:
    print(f"FAIL: {e}; install tests/requirements.txt (deploy/install-deps.sh does)", file=sys.stderr)
    sys.exit(1)

sys.path.insert(0, os.path.dirname(__file__))
import unicode_corpus  # noqa: E402


def training_text(path):
    import random
    rng = random.Random(1)
    words = ("the a little girl boy dog cat ran jumped happy sad day night sun moon tree park ball red big small "
             "said asked played with her his they we you it was is are were had has have and but so then "
             "once upon time there named loved wanted saw went home friend mom dad").split()
    lines = list(unicode_corpus.FIXED)
    for _ in range(3000):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))).capitalize() + ".")
    lines += unicode_corpus.random_strings(300, seed=2)
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line.replace("\n", " ").replace("\r", " ") + "\n")


def to_gguf(model_path, out):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    w = gguf.GGUFWriter(out, "llama")
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        # gguf token types, as llama.cpp's converter maps sentencepiece's
        t = 1
        if sp.is_unknown(i):
            t = 2
        elif sp.is_control(i):
            t = 3
        elif sp.is_unused(i):
            t = 5
        elif sp.is_byte(i):
            t = 6
        types.append(t)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sp


def main():
    tool, workdir = sys.argv[1], sys.argv[2]
    os.makedirs(workdir, exist_ok=True)
    corpus = os.path.join(workdir, "spm_corpus.txt")
    training_text(corpus)
    prefix = os.path.join(workdir, "spm")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, model_type="bpe", vocab_size=1000, byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        split_digits=True, character_coverage=0.98, seed_sentencepiece_size=100000, num_threads=1,
        minloglevel=2)
    gguf_path = os.path.join(workdir, "spm.gguf")
    sp = to_gguf(prefix + ".model", gguf_path)

    texts = unicode_corpus.FIXED + unicode_corpus.english_like(2000, seed=8) + unicode_corpus.random_strings(3000, seed=7)
    stdin = "".join(t.encode("utf-8").hex() + "\n" for t in texts)
    out = subprocess.run([tool, gguf_path], input=stdin, capture_output=True, text=True, check=True).stdout
    ours = [[int(x) for x in line.split()] for line in out.split("\n")[: len(texts)]]
    mismatches = 0
    for text, mine in zip(texts, ours):
        theirs = sp.encode(text)
        if mine != theirs:
            mismatches += 1
            if mismatches <= 5:
                print(f"MISMATCH {text!r}\n  ferry {mine}\n  spm   {theirs}")
    n_tokens = sum(len(x) for x in ours)
    n_bytes = sum(1 for x in ours for t in x if sp.is_byte(t))
    print(f"{'ok' if mismatches == 0 else 'FAIL'}: {len(texts)} strings, {n_tokens} tokens "
          f"({n_bytes} by byte fallback), {mismatches} mismatches (vocab {sp.get_piece_size()})")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
