"""ferry's chat rendering against Jinja2 (PyPI), the engine model files'
chat templates are written for. For each family ferry recognises, a Jinja
template in that family's published format is rendered by jinja2 and by
ferry (tests/tools/chat_render) over the same conversations; the texts must
be byte-identical (BOS excluded: ferry's tokenizer adds it). Conversations a
family cannot express must be refused by ferry, and a template of no known
family must be refused with the list of families.

usage: chat_template_check.py CHAT_RENDER WORKDIR
"""
import os
import subprocess
import sys

import jinja2

# Each family's format, as Jinja; raise_exception marks what the format refuses.
TEMPLATES = {
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "llama-3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
    "gemma": (
        "{{ bos_token }}{% set sys = '' %}{% if messages[0]['role'] == 'system' %}"
        "{% set sys = messages[0]['content'] | trim %}{% set messages = messages[1:] %}{% endif %}"
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}"
        "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "{% set content = (sys + '\n\n' + (m['content'] | trim)) if (loop.first and sys) else (m['content'] | trim) %}"
        "<start_of_turn>{{ role }}\n{{ content }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
    "llama-2": (
        "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] | trim %}"
        "{% set messages = messages[1:] %}{% else %}{% set sys = '' %}{% endif %}"
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}"
        "{% if m['role'] == 'user' %}"
        "{% set content = ('<<SYS>>\n' + sys + '\n<</SYS>>\n\n' + (m['content'] | trim)) if (loop.first and sys) else (m['content'] | trim) %}"
        "{% if not loop.first %}{{ bos_token }}{% endif %}[INST] {{ content }} [/INST]"
        "{% else %} {{ m['content'] | trim }} {{ eos_token }}{% endif %}{% endfor %}"),
    "mistral": (
        "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] | trim %}"
        "{% set messages = messages[1:] %}{% else %}{% set sys = '' %}{% endif %}"
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}"
        "{% if m['role'] == 'user' %}"
        "{% set content = (sys + '\n\n' + (m['content'] | trim)) if (loop.first and sys) else (m['content'] | trim) %}"
        "[INST] {{ content }} [/INST]{% else %}{{ m['content'] | trim }}{{ eos_token }}{% endif %}{% endfor %}"),
}

CONVERSATIONS = [
    [("user", "Hello!")],
    [("system", "You are terse."), ("user", "Name a prime.")],
    [("user", "  Hi  "), ("assistant", " Hello. "), ("user", "How are you?\n")],
    [("system", " Be kind.\n"), ("user", "Ünïcødé ✓ 日本語 🚀"), ("assistant", "Sure."), ("user", "Again")],
    [("user", "a\n\nb"), ("assistant", "c"), ("user", "d"), ("assistant", "e"), ("user", "f")],
    # Not alternating: refused by the families that need alternation.
    [("user", "one"), ("user", "two")],
    [("assistant", "I start")],
]


class Refused(Exception):
    pass


def raise_exception(msg):
    raise Refused(msg)


def main():
    chat_render, workdir = sys.argv[1:3]
    os.makedirs(workdir, exist_ok=True)
    env = jinja2.Environment(keep_trailing_newline=True)
    env.globals["raise_exception"] = raise_exception
    failures, checked = [], 0
    for family, source in TEMPLATES.items():
        path = os.path.join(workdir, f"{family}.jinja")
        with open(path, "w") as f:
            f.write(source)
        template = env.from_string(source)
        for conv in CONVERSATIONS:
            for gen in (True, False):
                messages = [{"role": r, "content": c} for r, c in conv]
                try:
                    want = template.render(messages=messages, add_generation_prompt=gen, bos_token="<s>",
                                           eos_token="</s>")
                    # BOS at the very start comes from the tokenizer, not the text.
                    want = want[len("<s>"):] if family in ("llama-3", "gemma") else want
                except Refused:
                    want = None
                args = [chat_render, path, "1" if gen else "0"] + [x for m in conv for x in m]
                p = subprocess.run(args, capture_output=True)
                checked += 1
                if want is None:
                    if p.returncode == 0:
                        failures.append(f"{family}: {conv} rendered, but the format refuses it")
                    continue
                if p.returncode != 0:
                    failures.append(f"{family}: {conv}: ferry refused: {p.stdout.decode()}")
                    continue
                got_family, got = p.stdout.split(b"\0", 1)
                if got_family.decode() != family:
                    failures.append(f"{family}: detected as {got_family.decode()}")
                if got.decode() != want:
                    failures.append(f"{family} gen={gen} {conv}:\n  ferry {got.decode()!r}\n  jinja {want!r}")
    # A template of no known family is refused with the list.
    other = os.path.join(workdir, "other.jinja")
    with open(other, "w") as f:
        f.write("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    p = subprocess.run([chat_render, other, "1", "user", "hi"], capture_output=True)
    if p.returncode == 0 or b"recognised: chatml, llama-2, llama-3, gemma, mistral" not in p.stdout:
        failures.append(f"unknown template: {p.returncode} {p.stdout!r}")
    for f in failures:
        print("FAIL:", f)
    print(f"{checked} renderings of {len(TEMPLATES)} families compared with jinja2 {jinja2.__version__}: "
          f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
