#!/usr/bin/env python3
"""ferry's byte-level BPE tokenizer against Hugging Face's `tokenizers`.

For every pre-tokenizer family ferry knows by `tokenizer.ggml.pre`, trains a
small byte-level BPE with the `tokenizers` library using that family's split
as its tokenizer.json configures it (HF's own ByteLevel, Digits and
Punctuation pre-tokenizers where the family uses them, Split with the
family's regex otherwise; `ignore_merges` where the family sets it), with
special tokens (control and user-defined), converts it to GGUF metadata as
llama.cpp's converter does (tokens, types, merges, tokenizer.ggml.pre), and
compares token ids on a fixed corpus, code, English-like sentences, random
mixed-script Unicode and text with special tokens inside. Every name
llama.cpp maps to the family's split is checked with the same vocabulary.
Any mismatch fails; so does a name ferry refuses, and an unknown name that
ferry accepts.
"""
import json
import os
import subprocess
import sys
import unicodedata

try:
    import gguf
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
except ImportError as e:
    print(f"FAIL: {e}; install tests/requirements.txt (deploy/install-deps.sh does)", file=sys.stderr)
    sys.exit(1)

sys.path.insert(0, os.path.dirname(__file__))
import unicode_corpus  # noqa: E402


def split(pattern):
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)


def byte_level(use_regex):
    # use_regex=True is GPT-2's split: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)


def char_class(ranges):
    return "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in ranges)


LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
          r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|"
          r"\s+(?!\S)|\s+")
GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
         r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
         r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# DeepSeek's tokenizer.json classes (the code points as llama.cpp lists them).
DS_LETTERS = r"\s?[" + char_class([
    (0x41, 0x5A), (0x61, 0x7A), (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BA), (0x1BC, 0x1BF),
    (0x1C4, 0x293), (0x295, 0x2AF), (0x370, 0x373), (0x376, 0x377), (0x37B, 0x37D), (0x37F, 0x37F),
    (0x386, 0x386), (0x388, 0x38A), (0x38C, 0x38C), (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481),
    (0x48A, 0x52F), (0x531, 0x556), (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD), (0x1C90, 0x1CBA),
    (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A), (0x1E00, 0x1F15), (0x1F18, 0x1F1D),
    (0x1F20, 0x1F45), (0x1F48, 0x1F4D), (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D),
    (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4), (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC),
    (0x1FD0, 0x1FD3), (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC), (0x2102, 0x2102),
    (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124), (0x2126, 0x2126),
    (0x2128, 0x2128), (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139), (0x213C, 0x213F), (0x2145, 0x2149),
    (0x214E, 0x214E), (0x2183, 0x2184), (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE), (0x2CF2, 0x2CF3),
    (0xA640, 0xA66D), (0xA680, 0xA69B), (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E), (0xAB70, 0xABBF),
    (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0x10400, 0x1044F),
    (0x104B0, 0x104D3), (0x104D8, 0x104FB), (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x118A0, 0x118DF),
    (0x1E900, 0x1E943)]) + "]+"
DS_PUNCT = r"\s?[!-/:-~" + char_class([(0xFF01, 0xFF0F), (0xFF1A, 0xFF5E), (0x2018, 0x201F), (0x3000, 0x3002)]) + "]+"
DS_CJK = "[" + char_class([(0x4E00, 0x9FA5), (0x800, 0x4E00), (0xAC00, 0xD7FF)]) + "]+"
DS3_CJK = "[" + char_class([(0x4E00, 0x9FA5), (0x3040, 0x309F), (0x30A0, 0x30FF)]) + "]+"
DS3_WORDS = (r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|"
             r" ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_LLAMACPP = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"

# (the tokenizer.ggml.pre names llama.cpp maps to the split, the split as
# the family's tokenizer.json configures it, ignore_merges). "" is a GGUF
# without the key. Where the tokenizer.json uses HF's own pre-tokenizers
# (GPT-2/OLMo: ByteLevel with its regex; StarCoder/SmolLM/Command-R/Refact:
# Digits then ByteLevel; Falcon: Punctuation, ByteLevel, Digits, Split) they
# are used here, so the reference does not share ferry's patterns. DeepSeek
# LLM and Coder are spelled as llama.cpp lists their steps (LLM's numbers as
# one run each, \p{N}+, as llama.cpp has it).
FAMILIES = [
    (["gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
      "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "exaone4", "mpt", "olmo", "jais", "trillion",
      "granite-docling"],
     lambda: [byte_level(True)], False),
    (["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"],
     lambda: [pre_tokenizers.Digits(individual_digits=True), byte_level(True)], False),
    (["falcon"],
     lambda: [pre_tokenizers.Punctuation(behavior="contiguous"), byte_level(True),
              pre_tokenizers.Digits(individual_digits=False), split("[0-9][0-9][0-9]")], False),
    (["llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano",
      "glm4", "glm5"],
     lambda: [split(LLAMA3), byte_level(False)], True),
    (["dbrx", "smaug-bpe", "chatglm-bpe"], lambda: [split(LLAMA3), byte_level(False)], False),
    (["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open", "grok-2"],
     lambda: [split(QWEN2), byte_level(False)], False),
    (["deepseek-llm"],
     lambda: [split("[\r\n]"), split(DS_LETTERS), split(DS_PUNCT), split(r"\s+$"), split(DS_CJK),
              split(r"\p{N}+"), byte_level(False)], False),
    (["deepseek-coder"],
     lambda: [split("[\r\n]"), split(r"\s?\p{L}+"), split(r"\s?\p{P}+"), split(DS_CJK),
              pre_tokenizers.Digits(individual_digits=True), byte_level(False)], False),
    (["deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"],
     lambda: [split(r"\p{N}{1,3}"), split(DS3_CJK), split(DS3_WORDS), byte_level(False)], False),
    (["tekken"], lambda: [split(TEKKEN), byte_level(False)], True),
    (["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"], lambda: [split(GPT4O), byte_level(False)], False),
    # No Hugging Face family: llama.cpp's own split for "default" and for a
    # file without the key, spelled as Splits.
    (["default", ""],
     lambda: [split(r"[\p{P}\$\+<=>\^~\|]+"), split(GPT2_LLAMACPP), split(r"\p{N}+"), split("[0-9][0-9][0-9]"),
              byte_level(False)], False),
]
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]  # control tokens
USER_DEFINED = ["<|user|>", "<|user|>!"]  # the second starts with the first: the longest wins
UNREACHABLE = ["zqzqzq", "\u0120zqzqzq", "\u0120wwvv"]  # \u0120 (Ġ) stands for the space byte


def build(pre_tokenizer_list, ignore_merges, corpus):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre_tokenizer_list)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    # Whole words that no merge builds: with ignore_merges a chunk equal to
    # one of them is that token, without it the merges split it.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for word in UNREACHABLE:
        vocab[word] = len(vocab)
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in USER_DEFINED])
    return tok


def to_gguf(tok, pre, out):
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for piece, i in vocab.items():
        tokens[i] = piece
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    types = [3 if t in SPECIALS else 4 if t in USER_DEFINED else 1 for t in tokens]
    w = gguf.GGUFWriter(out, "llama")
    w.add_tokenizer_model("gpt2")
    if pre:
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


def settled(text):
    """`text` without the code points Unicode 3.2 had not assigned, emoji
    excepted. The libraries compared classify characters with Unicode tables
    of different ages (HF's Punctuation pre-tokenizer predates U+061D, which
    PCRE2 and llama.cpp know as punctuation), so a character assigned lately
    would test the tables' versions, not the tokenizer."""
    return "".join(c for c in text if unicodedata.ucd_3_2_0.category(c) != "Cn" or 0x1F300 <= ord(c) <= 0x1F64F)


def run_tool(tool, path, texts):
    stdin = "".join(t.encode("utf-8").hex() + "\n" for t in texts)
    r = subprocess.run([tool, path], input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()
    return [[int(x) for x in line.split()] for line in r.stdout.split("\n")[: len(texts)]], ""


def main():
    tool, workdir = sys.argv[1], sys.argv[2]
    os.makedirs(workdir, exist_ok=True)
    corpus = (unicode_corpus.FIXED + unicode_corpus.MIXED * 20 + unicode_corpus.english_like(4000, seed=11)
              + unicode_corpus.random_strings(400, seed=12))
    texts = (unicode_corpus.FIXED + unicode_corpus.MIXED + unicode_corpus.english_like(2000, seed=13)
             + [settled(t) for t in unicode_corpus.random_strings(3000, seed=14)]
             + ["hello<|eot_id|>world", "<|begin_of_text|>Hi<|end_of_text|>", "a<|eot_id|><|eot_id|> b",
                "<|eot_id", "it's IT'S We'Re 12345678 don'T", "x<|user|>y <|user|><|eot_id|>\n<|user|>",
                "<|user|>!<|user|> !<|user|>!!",
                " <|user|> ", "<|begin_of_text|><|user|>", "zqzqzq", "a zqzqzq zqzqzq.", "wwvv wwvv zqzqzq"])
    failed = False
    for names, pre_tokenizer_list, ignore_merges in FAMILIES:
        tok = build(pre_tokenizer_list(), ignore_merges, corpus)
        theirs = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        n_tokens = sum(len(t) for t in theirs)
        for pre in names:
            path = os.path.join(workdir, f"bpe-{pre or 'none'}.gguf")
            n_vocab, n_merges = to_gguf(tok, pre, path)
            ours, err = run_tool(tool, path, texts)
            label = pre or "(no tokenizer.ggml.pre)"
            if ours is None:
                print(f"FAIL: {label}: ferry refused the file: {err}")
                failed = True
                continue
            mismatches = 0
            for text, mine, hf in zip(texts, ours, theirs):
                if mine != hf:
                    mismatches += 1
                    if mismatches <= 5:
                        print(f"MISMATCH [{label}] {text!r}\n  ferry {mine}\n  hf    {hf}")
            print(f"{'ok' if mismatches == 0 else 'FAIL'}: {label}: {len(texts)} strings, {n_tokens} tokens, "
                  f"{mismatches} mismatches (vocab {n_vocab}, {n_merges} merges"
                  f"{', ignore_merges' if ignore_merges else ''})")
            failed |= mismatches > 0
    # An unknown name is refused, and the refusal lists the known ones.
    path = os.path.join(workdir, "bpe-unknown.gguf")
    to_gguf(tok, "no-such-family", path)
    ours, err = run_tool(tool, path, ["x"])
    if ours is not None or "no-such-family" not in err or "smollm" not in err or "tekken" not in err:
        print(f"FAIL: an unknown pre-tokenizer was not refused with the known names: {ours} {err!r}")
        failed = True
    else:
        print(f"ok: unknown pre-tokenizer refused: {err[:120]}...")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
