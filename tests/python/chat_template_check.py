"""ferry's chat rendering against Jinja2 rendering the models' own templates.

chat_templates.json (beside this file) holds published tokenizer.chat_template
strings of real models, each with where it was taken from. For every template
ferry must recognise, jinja2 renders it the way Hugging Face transformers does
(sandboxed, trim_blocks, lstrip_blocks, raise_exception, strftime_now, the
model's bos/eos text) and ferry renders it (tests/tools/chat_render) over the
same conversations; the texts must be byte-identical, except the BOS at the
very start, which ferry's tokenizer adds. A conversation the template refuses
(it raises) must be refused by ferry. ferry is stricter than a template in
two documented cases only (chat.h): in the formats whose templates make turns
alternate, a system message that is not first, and a chat with no user
message (the template would drop the message or render an empty prompt);
there ferry must refuse with that reason. Templates ferry must not recognise
(other formats, or a family's markers with different expressions) must be
refused with the list of recognised families.

usage: chat_template_check.py CHAT_RENDER WORKDIR [TEMPLATES_JSON]
"""
import datetime
import json
import os
import subprocess
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

RECOGNISED = "chatml, qwen3, llama-2, llama-3, llama-3.1, gemma, gemma-3, mistral"
ALTERNATING = {"gemma", "gemma-3", "llama-2", "mistral"}
TODAY = datetime.date(2025, 3, 7)  # a day below 10, so "%d" must zero-pad

CONVERSATIONS = [
    [("user", "Hello!")],
    [("system", "You are terse."), ("user", "Name a prime.")],
    [("user", "  Hi  "), ("assistant", " Hello. "), ("user", "How are you?\n")],
    [("system", " Be kind.\n"), ("user", "Ünïcødé ✓ 日本語 🚀"), ("assistant", "Sure."), ("user", "Again")],
    [("user", "a\n\nb"), ("assistant", "c"), ("user", "d"), ("assistant", "e"), ("user", "f")],
    # Whitespace Python's str.strip removes and ASCII-only trimming would not.
    [("user", "\u3000ideographic space\u00a0"), ("assistant", "\u2003em spaces\u2003\x85"), ("user", "\x1cseparators\x1f")],
    [("system", ""), ("user", "empty system prompt")],
    [("user", "only one"), ("assistant", "an answer")],
    [("system", "sys"), ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")],
    [("user", "trailing newlines\n\n"), ("assistant", "\n\nleading newlines"), ("user", "ok")],
    [("user", "markers in text: <<SYS>> [INST] <|im_start|> <start_of_turn>")],
    # Reasoning in earlier answers (Qwen3 keeps it only after the last question).
    [("user", "2+2?"), ("assistant", "<think>\nadd them\n</think>\n\n4"), ("user", "and 3+3?")],
    [("user", "q"), ("assistant", "<think>\nr1\n</think>\n\nanswer one"), ("user", "q2"),
     ("assistant", "<think>\n\nr2\n\n</think>\n\nanswer two")],
    [("user", "question"), ("assistant", "<think>x</think>a"), ("user", "<tool_response>\n42\n</tool_response>"),
     ("assistant", "<think>y</think>\ndone</think> tail")],
    [("user", "q"), ("assistant", "no reasoning here")],
    # Not expressible in the alternating formats.
    [("user", "one"), ("user", "two")],
    [("assistant", "I start")],
    [("user", "hi"), ("system", "a late system message")],
    [("system", "only a system message")],
]


class Refused(Exception):
    pass


def raise_exception(message):
    raise Refused(message)


def jinja_env():
    # transformers' chat_template_utils._compile_jinja_template.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: TODAY.strftime(fmt)
    return env


BOS_MARK = "\x00BOS\x00"


def jinja_render(template, entry, conv, gen, thinking):
    """The template's text with the leading BOS removed, or None when it raises."""
    kwargs = dict(messages=[{"role": r, "content": c} for r, c in conv], add_generation_prompt=gen,
                  bos_token=BOS_MARK, eos_token=entry.get("eos", "</s>"))
    if thinking is False:
        kwargs["enable_thinking"] = False
    try:
        text = template.render(**kwargs)
    except Refused:
        return None
    if text.startswith(BOS_MARK):
        text = text[len(BOS_MARK):]
    return text.replace(BOS_MARK, entry.get("bos", "<s>"))


def ferry_render(chat_render, path, entry, conv, gen, thinking):
    args = [chat_render, f"--template_file={path}", f"--gen={int(gen)}", f"--thinking={int(thinking is not False)}",
            f"--today={TODAY.isoformat()}", f"--bos={entry.get('bos', '<s>')}", f"--eos={entry.get('eos', '</s>')}",
            "--"] + [x for m in conv for x in m]
    p = subprocess.run(args, capture_output=True)
    if p.returncode != 0:
        return None, p.stdout.decode(errors="replace")
    family, describe, text = p.stdout.split(b"\0", 2)
    return (family.decode(), describe.decode(), text.decode()), None


def stricter(family, conv):
    """ferry's own refusals beyond the template's, with the words its message uses."""
    if family not in ALTERNATING:
        return None
    if any(r == "system" for r, _ in conv[1:]):
        return "may only come first"
    if not any(r == "user" for r, _ in conv):
        return "no user message"
    return None


def main():
    chat_render, workdir = sys.argv[1:3]
    data = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                               "chat_templates.json")
    os.makedirs(workdir, exist_ok=True)
    env = jinja_env()
    failures, compared, refusals, families = [], 0, 0, set()
    with open(data, encoding="utf-8") as f:
        entries = json.load(f)["templates"]
    for entry in entries:
        name, want_family = entry["name"], entry["family"]
        path = os.path.join(workdir, f"{name}.jinja")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(entry["template"])
        if want_family is None:
            got, err = ferry_render(chat_render, path, entry, [("user", "hi")], True, True)
            if got is not None or f"recognised: {RECOGNISED}" not in err:
                failures.append(f"{name}: must be refused naming the recognised families; got {got or err!r}")
            refusals += 1
            continue
        template = env.from_string(entry["template"])
        families.add(want_family)
        for conv in CONVERSATIONS:
            for gen in (True, False):
                for thinking in ((None, False) if want_family == "qwen3" else (None,)):
                    want = jinja_render(template, entry, conv, gen, thinking)
                    got, err = ferry_render(chat_render, path, entry, conv, gen, thinking)
                    case = f"{name} gen={gen}{'' if thinking is None else ' thinking=off'} {conv}"
                    compared += 1
                    if got is not None and got[0] != want_family:
                        failures.append(f"{case}: recognised as {got[0]}, not {want_family}")
                        continue
                    if want is None:
                        if got is not None:
                            failures.append(f"{case}: the template refuses it, ferry rendered {got[2]!r}")
                        continue
                    if got is None:
                        reason = stricter(want_family, conv)
                        if reason is None or reason not in err:
                            failures.append(f"{case}: ferry refused ({err}); the template renders {want!r}")
                        continue
                    if got[2] != want:
                        failures.append(f"{case}:\n  ferry {got[2]!r}\n  jinja {want!r}")
    # Malformed input never crashes the renderer: every template cut short at
    # 24 points (unterminated tags and literals), and content that is not
    # UTF-8 (the service refuses it first; the renderer must not rely on that).
    crashes = 0
    for entry in entries:
        t = entry["template"].encode()
        for k in range(1, 25):
            path = os.path.join(workdir, "cut.jinja")
            with open(path, "wb") as f:
                f.write(t[:len(t) * k // 25])
            p = subprocess.run([chat_render, f"--template_file={path}", "--", "user", " hi "], capture_output=True)
            crashes += p.returncode not in (0, 1)
        if entry["family"] is not None:
            path = os.path.join(workdir, f"{entry['name']}.jinja")
            p = subprocess.run([chat_render.encode(), f"--template_file={path}".encode(), b"--", b"user",
                                b"\xe3\x80 \xff bad \xe2\x80\x83\xc2", b"assistant", b"\x80\xe3\x80\x80"],
                               capture_output=True)
            crashes += p.returncode not in (0, 1)
    if crashes:
        failures.append(f"{crashes} runs on malformed input crashed (exit status other than 0 or 1)")
    # A template of no family at all.
    other = os.path.join(workdir, "other.jinja")
    with open(other, "w") as f:
        f.write("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    got, err = ferry_render(chat_render, other, {}, [("user", "hi")], True, None)
    if got is not None or f"recognised: {RECOGNISED}" not in err:
        failures.append(f"unknown template: {got or err!r}")
    for f in failures:
        print("FAIL:", f)
    print(f"{compared} renderings of {len(entries) - refusals} templates ({', '.join(sorted(families))}) compared "
          f"with jinja2 {jinja2.__version__}; {refusals + 1} templates refused as expected checked: "
          f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
