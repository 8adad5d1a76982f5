"""Seeded test strings for tokenizer comparisons: a fixed corpus plus random
Unicode (mixed scripts, emoji, whitespace runs, digits, punctuation)."""
import random

FIXED = [
    "Once upon a time, there was a little girl named Lily.",
    "She said: \"Hello, world!\" and left at 10:45pm.",
    "  leading spaces,   runs of   spaces, trailing  ",
    "tabs\tand\nnewlines\n\n and\r\nwindows lines",
    "numbers 1234567890 3.14159 -42 1,000,000 2024-11-25",
    "café naïve résumé façade jalapeño Ångström",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "日本語のテキストとカタカナ、ひらがな。中文也可以。",
    "한국어 문장입니다. العربية نص. עברית טקסט. हिन्दी पाठ।",
    "emoji 😀😃🙈 👩‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and ✨ sparkles ✨",
    "math ∑∫√∞ ≤≥≠ and arrows →⇒↔ and box ┌─┐",
    "code: def f(x): return x**2 + 1  # comment",
    "URL https://example.com/path?query=1&b=2#frag",
    "MiXeD CaSe WoRdS and ALLCAPS and snake_case_words",
    "'quotes' \"double\" «guillemets» „low“ ‚single‘",
    "",
    " ",
    "a",
]

RANGES = [
    (0x20, 0x7E), (0x20, 0x7E), (0x20, 0x7E),  # ASCII, weighted up
    (0xA0, 0x24F),      # Latin-1 supplement, extended
    (0x370, 0x3FF),     # Greek
    (0x400, 0x4FF),     # Cyrillic
    (0x590, 0x5FF),     # Hebrew
    (0x600, 0x6FF),     # Arabic
    (0x900, 0x97F),     # Devanagari
    (0x3040, 0x30FF),   # Hiragana, Katakana
    (0x4E00, 0x4FFF),   # CJK
    (0xAC00, 0xAD00),   # Hangul
    (0x1F300, 0x1F64F), # emoji
    (0x2000, 0x206F),   # general punctuation (odd spaces, joiners)
    (0x30, 0x39),       # digits
]
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "\r\n"]


def random_strings(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            kind = rng.random()
            if kind < 0.2:
                parts.append(rng.choice(WHITESPACE))
            elif kind < 0.3:
                parts.append(str(rng.randint(0, 10**rng.randint(1, 9))))
            else:
                lo, hi = rng.choice(RANGES)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8))))
        out.append("".join(parts))
    return out


WORDS = ("the a little girl boy dog cat ran jumped happy sad day night sun moon tree park ball red big small said "
         "asked played with her his they we you it was is are were had has have and but so then once upon time "
         "there named loved wanted saw went home friend mom dad Lily Tom Max don't it's I'm 42 7 2024").split()


def english_like(n, seed):
    """Sentences of common words with punctuation, digits and odd spacing."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 16))]
        sep = rng.choice([" ", " ", " ", "  ", ", ", "\n"])
        out.append(sep.join(words) + rng.choice([".", "!", "?", "", " ", "..."]))
    return out


# Text of the shapes pre-tokenizers treat differently: code with indentation
# and tabs, whitespace runs before words and at line ends, digit runs of
# every length, case changes inside words, contractions in any case,
# combining marks, CJK with kana and Hangul, full-width forms, CRLF lines.
MIXED = [
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (size_t i = 0; i < v.size(); ++i) {\n\tsum += v[i] * 0x1F;  // accumulate\n}\n",
    "    indented\n\t\ttabbed\n   \n\n\n    \t  mixed   \t\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son';",
    "<div class=\"x\">&nbsp;Hello</div>\r\n<br/>\r\n",
    "x = [1, 22, 333, 4444, 55555, 666666, 7777777, 88888888, 999999999, 1234567890123]",
    "3.14159265358979 2.71828 6.022e23 -0.000001 1e-9 100% $1,234.56 ¥5000 €12,50",
    "HelloWorld camelCaseIdentifier XMLHttpRequest iPhone McDONALD's ABCdef abcDEF",
    "I'M HERE. YOU'RE THERE. WE'VE SEEN IT, DON'T WE? She'd say it's THEY'LL",
    "e\u0301 a\u0308 n\u0303 combining: cafe\u0301 na\u0308ive \u0915\u094d\u0937 \u0e01\u0e34\u0e19",
    "東京は日本の首都です。カタカナとひらがな、漢字。한국어와 日本語 mixed with English123",
    "ＦＵＬＬ　ｗｉｄｔｈ　ｔｅｘｔ！？（１２３）「引用」『二重』",
    "Ελληνικά κείμενα, Ἀθῆναι ῥήτωρ; Українська мова; Ქართული; Հայերեն",
    "tabs\t\tbetween\t words   and  trailing spaces   \n  next line",
    "  \n\n  \r\n\r\n\t\n \u00a0\u2003\u3000 odd spaces\u200b zero-width",
    "emoji 👍🏽 👨‍👩‍👧 🏳️‍🌈 ✓✗ ★☆ →← ∀x∈ℝ: x²≥0, ½ ¼ ¾ ⅓ ①②③ ⁴⁵",
    "path/to/file.txt ../up C:\\Windows\\System32 https://a.b/c?d=e&f=g#h",
    "a" * 200,
    " " * 100 + "x",
    "1" * 100,
    "word " * 60,
    "mixed123abc456DEF789 v1.2.3-rc.4 2024-01-31T12:34:56Z",
]
