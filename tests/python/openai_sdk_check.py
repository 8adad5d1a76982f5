"""`ferry serve --http_port` through the real `openai` Python SDK (PyPI,
pinned in tests/requirements.txt), an implementation ferry did not write:

  - on SmolLM2-135M-Instruct (the test setup's real model): chat and
    completion, streamed and not, greedy text and usage equal to the gRPC
    API's answer to the same request on the same server; prompt_cache_key's
    cached tokens as gRPC's session_id reports them; text content
    parts; stop strings (the text ends where the stop string first starts
    in the unstopped text, as gRPC's does); logprobs and top alternatives
    equal to gRPC's; /v1/models; the README's Python and curl examples;
    400 (malformed JSON, a value gRPC refuses, with gRPC's message; n = 2),
    404, 405 and 413, each in OpenAI's error shape; the requests counted by
    api and code in /metrics;
  - on a model of stories260K's shape (fast): 64 concurrent streams, each
    equal to its run alone (seeded sampling at temperature 0.9); `ferry
    loadgen --http`, 1024 requests over 16 keep-alive connections;
  - on a slow sim device with one slot and no queue: a client that
    disconnects mid-stream has its request cancelled and its slot and KV
    cache freed; 429 with Retry-After while the slot is taken; SIGTERM
    drains (health and new requests 503, the running stream ends with
    [DONE]);
  - 503 while the model loads (a model with a 3-million-token vocabulary);
  - TLS with client certificates and the bearer token (401 without it).

usage: openai_sdk_check.py FERRY_BINARY PROTO_DIR WORKDIR TEST_MODELS_DIR README
"""
import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time

import grpc
import httpx2
import openai

import ferry_server

CHAT = "Name three primary colors."
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Every layer streamed at 0.02 GB/s (not computed on the CPU, which "auto" picks).
SLOW_DEVICE = ["--device", "sim:mem=64MiB,overhead=0,h2d=0.02GB/s", "--gpu_layers", "0", "--placement", "stream"]
ERROR_KEYS = {"message", "type", "param", "code"}

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


class Server(ferry_server.Server):
    """ferry_server.Server with --http_port 0: the HTTP port from its output."""

    def __init__(self, ferry, args):
        super().__init__(ferry, ["--http_port", "0"] + args)
        m = re.search(r"OpenAI-compatible API on https?://[^ ]*:(\d+)/v1", self.output)
        self.http_port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.http_port}"


def error_shape(r, status, what):
    """The response is `status` with OpenAI's error body; returns the error object."""
    try:
        body = r.json()
    except ValueError:
        body = None
    ok = (r.status_code == status and isinstance(body, dict) and set(body) == {"error"}
          and set(body["error"]) == ERROR_KEYS and isinstance(body["error"]["message"], str)
          and isinstance(body["error"]["type"], str))
    check(ok, f"{what}: want {status} with OpenAI's error shape, got {r.status_code} {r.text[:300]!r}")
    return body["error"] if ok else {}


def metric(metrics_port, name, labels):
    text = httpx2.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(name + "{"):
            sample, value = line.rsplit(" ", 1)
            got = dict(re.findall(r'(\w+)="([^"]*)"', sample))
            if got == labels:
                return float(value)
    raise KeyError(f"{name}{want} not in /metrics")


def eventually(pred, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def grpc_generate(stub, req):
    msgs = list(stub.Generate(req, timeout=120))
    return "".join(m.text for m in msgs if not m.echo_prompt), msgs


def stream_text(stream):
    """(text, finish_reason, usage) of a streamed completion or chat completion."""
    text, finish, usage, n = "", None, None, 0
    for chunk in stream:
        n += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += (c.delta.content or "") if hasattr(c, "delta") else c.text
            finish = c.finish_reason or finish
    return text, finish, usage


def smollm2_checks(ferry, pb, pbg, model_path, readme):
    with Server(ferry, ["--model", model_path, "--ctx", "512", "--max_message_bytes", "65536"]) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        stub = pbg.InferenceStub(grpc.insecure_channel(f"127.0.0.1:{s.port}"))
        finish_names = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_STOP_SEQUENCE: "stop",
                        pb.FINISH_REASON_LENGTH: "length"}

        # Chat, greedy: the same text and usage as gRPC's.
        want, msgs = grpc_generate(stub, pb.GenerateRequest(
            chat=pb.ChatPrompt(messages=[pb.ChatMessage(role="user", content=CHAT)]), max_tokens=40,
            sampling=pb.SamplingParams(temperature=0)))
        usage = msgs[-1].usage
        r = client.chat.completions.create(model="any-name", messages=[{"role": "user", "content": CHAT}],
                                           max_tokens=40, temperature=0)
        check(r.choices[0].message.content == want,
              f"chat: {r.choices[0].message.content!r} differs from gRPC's {want!r}")
        check(r.choices[0].message.role == "assistant" and r.object == "chat.completion" and r.model == SMOLLM2,
              f"chat response: {r}")
        check(r.choices[0].finish_reason == finish_names[msgs[-1].finish_reason], f"chat finish: {r.choices[0]}")
        check((r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) ==
              (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens + usage.completion_tokens),
              f"chat usage {r.usage} vs gRPC's {usage}")
        print(f"chat: {want!r} ({usage.completion_tokens} tokens), as gRPC answers")

        stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": CHAT}],
                                                max_tokens=40, temperature=0, stream=True,
                                                stream_options={"include_usage": True})
        text, finish, u = stream_text(stream)
        check(text == want, f"streamed chat {text!r} differs from gRPC's {want!r}")
        check(finish == finish_names[msgs[-1].finish_reason], f"streamed chat finish {finish}")
        check(u is not None and (u.prompt_tokens, u.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens),
              f"streamed chat usage {u} vs gRPC's {usage}")
        # Text parts; `user` and fields ferry does not know are ignored; no
        # max_tokens: as many as the context leaves (the answer ends first).
        parts = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": [{"type": "text", "text": CHAT}]}], temperature=0,
            user="someone", extra_body={"not_an_openai_field": {"nested": [1, 2]}})
        check(parts.choices[0].message.content == want, f"text parts: {parts.choices[0].message.content!r}")

        # prompt_cache_key (OpenAI's cache hint) is ferry's session: the
        # second request of a conversation reuses the first's KV cache, with
        # the cached tokens reported as gRPC reports them for its session_id.
        def turn(send):
            first = send([{"role": "user", "content": CHAT}])
            return first, send([{"role": "user", "content": CHAT}, {"role": "assistant", "content": first[0]},
                                {"role": "user", "content": "And three secondary colors?"}])

        def grpc_turn(messages):
            text, m = grpc_generate(stub, pb.GenerateRequest(
                chat=pb.ChatPrompt(messages=[pb.ChatMessage(**x) for x in messages]), max_tokens=16,
                sampling=pb.SamplingParams(temperature=0), session_id="grpc-conversation"))
            return text, m[-1].usage.prompt_tokens, m[-1].usage.cached_tokens

        def http_turn(messages):
            r = client.chat.completions.create(model="m", messages=messages, max_tokens=16, temperature=0,
                                               extra_body={"prompt_cache_key": "http-conversation"})
            return (r.choices[0].message.content, r.usage.prompt_tokens,
                    r.usage.prompt_tokens_details.cached_tokens)

        grpc_turns, http_turns = turn(grpc_turn), turn(http_turn)
        check(http_turns == grpc_turns and http_turns[1][2] > 0,
              f"prompt_cache_key: {http_turns} vs gRPC's session_id {grpc_turns} (cached tokens last)")
        print(f"prompt_cache_key: the second turn reused {http_turns[1][2]} of {http_turns[1][1]} prompt tokens, "
              "as gRPC's session_id")

        # Completion, greedy, streamed and not.
        prompt = "Once upon a time"
        want, msgs = grpc_generate(stub, pb.GenerateRequest(text=prompt, max_tokens=24,
                                                            sampling=pb.SamplingParams(temperature=0)))
        r = client.completions.create(model="m", prompt=prompt, max_tokens=24, temperature=0)
        check(r.choices[0].text == want, f"completion {r.choices[0].text!r} differs from gRPC's {want!r}")
        check(r.usage.completion_tokens == msgs[-1].usage.completion_tokens == 24 and r.choices[0].finish_reason ==
              "length", f"completion usage/finish: {r.usage} {r.choices[0].finish_reason}")
        text, finish, u = stream_text(client.completions.create(model="m", prompt=prompt, max_tokens=24,
                                                                temperature=0, stream=True,
                                                                stream_options={"include_usage": True}))
        check(text == want and finish == "length" and u.completion_tokens == 24,
              f"streamed completion {text!r} {finish} {u} vs gRPC's {want!r}")
        print(f"completion: {want!r}, streamed and not, as gRPC")
        r = client.completions.create(model="m", prompt=prompt, max_tokens=24, temperature=0, echo=True)
        text, _, _ = stream_text(client.completions.create(model="m", prompt=prompt, max_tokens=24, temperature=0,
                                                           echo=True, stream=True))
        check(r.choices[0].text == text == prompt + want, f"echo: {r.choices[0].text!r} / {text!r}")
        # No max_tokens and a prompt near the context: the rest of the context.
        r = client.completions.create(model="m", prompt="one two " * 230, temperature=0)
        check(r.usage.prompt_tokens > 400 and (r.choices[0].finish_reason == "stop" or
                                               r.usage.prompt_tokens + r.usage.completion_tokens == 512),
              f"a long prompt without max_tokens: {r.usage} {r.choices[0].finish_reason}")

        # Stop strings: the text before the first occurrence in the unstopped text.
        stop = want.split()[3]
        expect = want[:want.index(stop)]
        r = client.completions.create(model="m", prompt=prompt, max_tokens=24, temperature=0,
                                      stop=[stop, "never-appears"])
        grpc_stopped, _ = grpc_generate(stub, pb.GenerateRequest(text=prompt, max_tokens=24, stop=[stop],
                                                                 sampling=pb.SamplingParams(temperature=0)))
        check(r.choices[0].text == expect == grpc_stopped and r.choices[0].finish_reason == "stop",
              f"stop {stop!r}: {r.choices[0].text!r} ({r.choices[0].finish_reason}), want {expect!r}, "
              f"gRPC {grpc_stopped!r}")
        text, finish, _ = stream_text(client.completions.create(model="m", prompt=prompt, max_tokens=24,
                                                                temperature=0, stop=stop, stream=True))
        check(text == expect and finish == "stop", f"streamed stop {stop!r}: {text!r} {finish}")
        print(f"stop {stop!r}: {expect!r}")

        # Log-probabilities: gRPC's numbers, chat's and the completions' shapes.
        _, msgs = grpc_generate(stub, pb.GenerateRequest(
            chat=pb.ChatPrompt(messages=[pb.ChatMessage(role="user", content=CHAT)]), max_tokens=8,
            sampling=pb.SamplingParams(temperature=0), logprobs=True, top_logprobs=3))
        want_lp = [lp for m in msgs for lp in m.logprobs]
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": CHAT}], max_tokens=8,
                                           temperature=0, logprobs=True, top_logprobs=3)
        got = r.choices[0].logprobs.content
        check(len(got) == len(want_lp) == 8, f"chat logprobs: {len(got)} entries, gRPC {len(want_lp)}")
        for g, w in zip(got, want_lp):
            check(g.logprob == w.logprob and [(t.token, t.logprob) for t in g.top_logprobs] ==
                  [(t.token, t.logprob) for t in w.top], f"chat logprob {g} vs gRPC {w}")
            check(bytes(g.bytes).decode("utf-8", "replace") == g.token, f"logprob bytes {g}")
        check("".join(g.token for g in got) == r.choices[0].message.content,
              f"logprob tokens {[g.token for g in got]} vs {r.choices[0].message.content!r}")
        _, msgs = grpc_generate(stub, pb.GenerateRequest(text=prompt, max_tokens=6, logprobs=True, top_logprobs=2,
                                                         sampling=pb.SamplingParams(temperature=0)))
        r = client.completions.create(model="m", prompt=prompt, max_tokens=6, temperature=0, logprobs=2)
        lp = r.choices[0].logprobs
        check(lp.token_logprobs == [l.logprob for m in msgs for l in m.logprobs] and
              [len(t) for t in lp.top_logprobs] == [2] * 6 and "".join(lp.tokens) == r.choices[0].text,
              f"completion logprobs {lp}")
        print("logprobs and top_logprobs equal gRPC's")

        models = client.models.list().data
        check(len(models) == 1 and models[0].id == SMOLLM2 and models[0].model_extra.get("context_length") == 512,
              f"/v1/models: {models}")
        check(client.models.retrieve(SMOLLM2).id == SMOLLM2, "/v1/models/{id}")
        try:
            client.models.retrieve("other")
            check(False, "/v1/models/other was found")
        except openai.NotFoundError:
            pass

        readme_examples(readme, s)

        # Errors: OpenAI's shape, gRPC's messages.
        url = s.url + "/v1/completions"
        error_shape(httpx2.post(url, content=b'{"prompt": "x",', timeout=30), 400, "malformed JSON")
        try:
            list(stub.Generate(pb.GenerateRequest(text="Once", sampling=pb.SamplingParams(top_p=0)), timeout=30))
            grpc_message = None
        except grpc.RpcError as e:
            grpc_message = e.details()
        err = error_shape(httpx2.post(url, json={"prompt": "Once", "top_p": 0}, timeout=30), 400, "top_p = 0")
        check(err.get("message") == grpc_message, f"top_p = 0: {err.get('message')!r}, gRPC says {grpc_message!r}")
        try:
            client.completions.create(model="m", prompt="Once", top_p=0)
            check(False, "the SDK's top_p = 0 was accepted")
        except openai.BadRequestError as e:
            check(e.status_code == 400 and e.message.endswith(grpc_message), f"SDK 400: {e}")
        err = error_shape(httpx2.post(url, json={"prompt": "Once", "n": 2}, timeout=30), 400, "n = 2")
        check(err.get("param") == "n", f"n = 2: {err}")
        error_shape(httpx2.get(s.url + "/v1/nothing", timeout=30), 404, "unknown path")
        r = httpx2.get(url, timeout=30)
        error_shape(r, 405, "GET /v1/completions")
        check(r.headers.get("allow") == "POST", f"405 Allow: {r.headers}")
        err = error_shape(httpx2.post(url, json={"prompt": "a" * 70000}, timeout=30), 413, "70 kB body")
        check("65536" in err.get("message", ""), f"413 names the limit: {err}")
        try:
            client.completions.create(model="m", prompt="a" * 70000)
            check(False, "the SDK's 70 kB prompt was accepted")
        except openai.APIStatusError as e:
            check(e.status_code == 413, f"SDK 413: {e}")
        print("400, 404, 405, 413 in OpenAI's error shape; 400 with gRPC's message")

        # The same metric counts both APIs.
        counts = {c: metric(s.metrics_port, "ferry_requests_total", {"api": "http", "code": c})
                  for c in ("200", "400", "405", "413")}
        # 200: 14 requests above and 4 in the README's examples.
        check(counts == {"200": 18, "400": 4, "405": 1, "413": 2},
              f"ferry_requests_total{{api=http}}: {counts}")
        grpc_ok = metric(s.metrics_port, "ferry_requests_total", {"api": "grpc", "code": "OK"})
        check(grpc_ok == 7, f"ferry_requests_total{{api=grpc,code=OK}} = {grpc_ok}")


def readme_examples(readme, server):
    """The Python and curl examples of the README's "OpenAI-compatible API"
    section, pointed at this server."""
    text = open(readme).read()
    section = text[text.index("## OpenAI-compatible API"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```(python|sh)\n(.*?)```", section, re.S)
    check(sum(kind == "sh" for kind, _ in blocks) >= 3 and any(kind == "python" for kind, _ in blocks),
          f"README examples: {[k for k, _ in blocks]}")
    for kind, code in blocks:
        code = code.replace("localhost:8080", f"127.0.0.1:{server.http_port}")
        cmd = [sys.executable, "-c", code] if kind == "python" else ["bash", "-euo", "pipefail", "-c", code]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if not check(p.returncode == 0, f"README {kind} example failed ({p.returncode}): {code}\n{p.stderr}"):
            continue
        if kind == "python":
            check(p.stdout.startswith("The primary colors"), f"README Python example printed {p.stdout!r}")
        elif '"stream": true' in code:
            events = [l[6:] for l in p.stdout.splitlines() if l.startswith("data: ")]
            check(events[-1] == "[DONE]" and all(json.loads(e)["object"] == "text_completion" for e in events[:-1])
                  and json.loads(events[-2])["usage"]["completion_tokens"] == 16, f"README stream: {p.stdout}")
        else:
            check("error" not in json.loads(p.stdout), f"README curl: {p.stdout}")
    print(f"README: {len(blocks)} examples run")


def concurrency_checks(ferry, pb, pbg, model):
    """64 streams at once equal their runs alone (seeded sampling)."""
    with Server(ferry, ["--model", model, "--ctx", "256", "--slots", "16"]) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)

        def kwargs(i):
            return dict(model="m", prompt=[1, 10 + i], max_tokens=32, temperature=0.9, seed=1000 + i,
                        stream=True, extra_body={"ignore_eos": True}, stream_options={"include_usage": True})

        alone = [stream_text(client.completions.create(**kwargs(i))) for i in range(64)]
        stub = pbg.InferenceStub(grpc.insecure_channel(f"127.0.0.1:{s.port}"))
        most_running = 0
        done = threading.Event()

        def watch():
            nonlocal most_running
            while not done.is_set():
                most_running = max(most_running, stub.GetStats(pb.GetStatsRequest(), timeout=10).running)
                time.sleep(0.005)

        async def together():
            aclient = openai.AsyncOpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)

            async def one(i):
                text, finish, usage = "", None, None
                async for chunk in await aclient.completions.create(**kwargs(i)):
                    usage = chunk.usage or usage
                    for c in chunk.choices:
                        text += c.text
                        finish = c.finish_reason or finish
                return text, finish, usage

            return await asyncio.gather(*(one(i) for i in range(64)))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            concurrent = asyncio.run(together())
        finally:
            done.set()
            watcher.join()
        differ = [i for i in range(64) if concurrent[i][:2] != alone[i][:2] or
                  concurrent[i][2].completion_tokens != 32]
        check(not differ, f"concurrent streams differ from their runs alone: {differ[:5]} e.g. "
                          f"{concurrent[differ[0]] if differ else ''} vs {alone[differ[0]] if differ else ''}")
        check(len({a[0] for a in alone}) > 32, "the 64 seeded requests should mostly differ")
        check(most_running > 1, f"at most {most_running} requests ran at once")
        print(f"64 concurrent streams equal their runs alone (up to {most_running} running at once)")

        # ferry loadgen --http: 16 keep-alive connections, each sending its
        # next request the moment the last event arrives (a client as quick
        # as this once found the server still waiting on the last response).
        # (1024 short requests: that server hung within 20 s every time.)
        try:
            p = subprocess.run([ferry, "loadgen", "--http", "--target", f"127.0.0.1:{s.http_port}", "--concurrency",
                                "16", "--requests", "1024", "-n", "2"], capture_output=True, text=True, timeout=60)
            check(p.returncode == 0 and "requests: 1024 ok in" in p.stdout and "(2048 tokens)" in p.stdout,
                  f"loadgen --http: {p.stdout}{p.stderr}")
            print("loadgen --http: " + " ".join(p.stdout.splitlines()[1:3]))
        except subprocess.TimeoutExpired:
            check(False, "loadgen --http (1024 requests over 16 keep-alive connections) did not finish in 60 s")


def slow_server_checks(ferry, pb, pbg, model):
    with Server(ferry, ["--model", model, "--ctx", "256", "--slots", "1", "--max_queue", "0"] + SLOW_DEVICE) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        stub = pbg.InferenceStub(grpc.insecure_channel(f"127.0.0.1:{s.port}"))
        stats = lambda: stub.GetStats(pb.GetStatsRequest(), timeout=10)
        long = dict(model="m", prompt="Once upon a time", max_tokens=200, temperature=0, stream=True,
                    extra_body={"ignore_eos": True})

        # A client that goes away: its request is cancelled, slot and KV freed.
        stream = client.completions.create(**long)
        for i, _ in enumerate(stream):
            if i == 2:
                break
        check(stats().running == 1, "the long stream should be running")
        stream.close()
        t0 = time.time()
        freed = eventually(lambda: (lambda st: st.running == 0 and st.kv_tokens_used == 0)(stats()))
        check(freed, f"the slot was not freed after the client disconnected: {stats()}")
        check(stats().generated_tokens < 100, f"the disconnected request kept generating: {stats()}")
        check(metric(s.metrics_port, "ferry_request_finish_total", {"reason": "cancelled"}) == 1 and
              metric(s.metrics_port, "ferry_requests_total", {"api": "http", "code": "499"}) == 1,
              "a disconnect counts as cancelled and 499")
        r = client.completions.create(model="m", prompt="Once", max_tokens=4, temperature=0)
        check(r.usage.completion_tokens == 4, f"after a disconnect: {r}")
        print(f"disconnect mid-stream: slot and KV cache freed {time.time() - t0:.2f} s later")

        # A client that gives up waiting for a JSON answer (nothing is
        # written to it until the end): the server's read on the connection
        # sees it go.
        generated = stats().generated_tokens
        try:
            httpx2.post(s.url + "/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 200,
                                                         "temperature": 0, "ignore_eos": True}, timeout=1.0)
            check(False, "the 200-token JSON request answered within its 1 s timeout")
        except httpx2.TimeoutException:
            pass
        check(eventually(lambda: (lambda st: st.running == 0 and st.kv_tokens_used == 0)(stats())),
              f"the slot was not freed after a non-streaming client left: {stats()}")
        check(stats().generated_tokens - generated < 100, f"the abandoned JSON request kept generating: {stats()}")
        check(metric(s.metrics_port, "ferry_requests_total", {"api": "http", "code": "499"}) == 2,
              "an abandoned JSON request counts as 499")
        print("a JSON request whose client timed out: slot and KV cache freed")

        # The slot taken and no queue: 429 with Retry-After.
        stream = client.completions.create(**long)
        next(iter(stream))
        r = httpx2.post(s.url + "/v1/completions", json={"prompt": "Once", "max_tokens": 4}, timeout=30)
        err = error_shape(r, 429, "full queue")
        check(r.headers.get("retry-after") == "1" and "queue full" in err.get("message", ""),
              f"429: {r.headers} {err}")
        try:
            client.completions.create(model="m", prompt="Once", max_tokens=4)
            check(False, "the SDK's request was accepted with a full queue")
        except openai.RateLimitError as e:
            check(e.status_code == 429, f"SDK 429: {e}")
        stream.close()
        check(eventually(lambda: stats().running == 0), "the second stream was not cancelled")
        print("429 with Retry-After while the only slot is taken")

        # SIGTERM drains: new requests and health 503, the running stream finishes.
        result = {}

        def run():
            result["r"] = stream_text(client.completions.create(
                model="m", prompt="Once upon a time", max_tokens=40, temperature=0, stream=True,
                extra_body={"ignore_eos": True}, stream_options={"include_usage": True}))

        t = threading.Thread(target=run)
        t.start()
        check(eventually(lambda: stats().running == 1), "the drained stream did not start")
        s.proc.send_signal(signal.SIGTERM)
        check(eventually(lambda: httpx2.get(s.url + "/health", timeout=10).status_code == 503),
              "/health did not turn 503 on SIGTERM")
        error_shape(httpx2.get(s.url + "/health", timeout=10), 503, "health while draining")
        r = httpx2.post(s.url + "/v1/completions", json={"prompt": "Once", "max_tokens": 4}, timeout=30)
        err = error_shape(r, 503, "a request while draining")
        check(err.get("message") == "the server is shutting down" and r.headers.get("retry-after") == "1",
              f"503 while draining: {err} {r.headers}")
        t.join(timeout=60)
        text, finish, usage = result.get("r", (None, None, None))
        check(finish == "length" and usage is not None and usage.completion_tokens == 40,
              f"the stream running at SIGTERM did not finish: {result}")
        check(s.proc.wait(timeout=30) == 0, f"exit code {s.proc.returncode} after the drain")
        print("SIGTERM: /health and new requests 503, the running stream finished with [DONE]")


def loading_check(ferry, workdir):
    """While the model loads: 503. The model has a 3-million-token vocabulary
    (about 2 s of tokenizer set-up on the 2-core VM); the requests go as soon
    as the server prints its HTTP port (a model served before they were
    answered fails the check: its answers are not 503)."""
    model = os.path.join(workdir, "vocab-3m.gguf")
    subprocess.run([ferry, "make-model", "--out", model, "--layers", "1", "--embd", "16", "--heads", "2",
                    "--kv_heads", "1", "--ff", "32", "--vocab", "3000000", "--type", "f16", "--tied_output"],
                   check=True, capture_output=True)
    proc = subprocess.Popen([ferry, "serve", "--model", model, "--ctx", "64", "--port", "0", "--metrics_port", "-1",
                             "--http_port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        for line in proc.stdout:
            m = re.search(r"OpenAI-compatible API on http://[^ ]*:(\d+)/v1", line)
            if m:
                port = int(m.group(1))
                break
        if not check(port is not None, "no HTTP port while loading"):
            return
        err = error_shape(httpx2.get(f"http://127.0.0.1:{port}/health", timeout=10), 503, "health while loading")
        check(err.get("message") == "the model is still loading", f"health while loading: {err}")
        r = httpx2.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                        json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        err = error_shape(r, 503, "chat while loading")
        check(err.get("message") == "the model is still loading" and r.headers.get("retry-after") == "1",
              f"chat while loading: {err} {r.headers}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        os.unlink(model)
    print("503 while the model loads")


def tls_checks(ferry, model, workdir):
    d = os.path.join(workdir, "certs")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (["req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca"],
                ["req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
                ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
                 "server.pem", "-days", "1", "-extfile", "ext.cnf"],
                ["req", *key, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=test-client"],
                ["x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
                 "client.pem", "-days", "1"]):
        subprocess.run(["openssl", *cmd], cwd=d, check=True, capture_output=True)
    token = "test-token-0123456789"
    # Only its owner may read a token file (serve refuses one others can read).
    fd = os.open(os.path.join(d, "token"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(os.path.join(d, "token"), 0o600)
    p = lambda name: os.path.join(d, name)
    with Server(ferry, ["--model", model, "--ctx", "128", "--tls_cert", p("server.pem"), "--tls_key",
                        p("server.key"), "--tls_client_ca", p("ca.pem"), "--auth_token_file", p("token")]) as s:
        check("OpenAI-compatible API on https://" in s.output and ", bearer token" in s.output,
              f"TLS server output: {s.output}")
        base = f"https://localhost:{s.http_port}/v1"
        ctx = ssl.create_default_context(cafile=p("ca.pem"))
        ctx.load_cert_chain(p("client.pem"), p("client.key"))
        mtls = httpx2.Client(verify=ctx)
        client = openai.OpenAI(base_url=base, api_key=token, max_retries=0, http_client=mtls)
        r = client.completions.create(model="m", prompt="Once", max_tokens=4, temperature=0)
        check(r.usage.completion_tokens == 4, f"mutual TLS with the token: {r}")
        for bad in ("wrong-token", None):
            headers = {"Authorization": f"Bearer {bad}"} if bad else {}
            resp = mtls.post(base + "/completions", json={"prompt": "Once", "max_tokens": 4}, headers=headers)
            error_shape(resp, 401, f"token {bad}")
            check(resp.headers.get("www-authenticate") == "Bearer", f"401 headers {resp.headers}")
        try:
            openai.OpenAI(base_url=base, api_key="wrong", max_retries=0, http_client=mtls).models.list()
            check(False, "a wrong token was accepted")
        except openai.AuthenticationError as e:
            check(e.status_code == 401, f"SDK 401: {e}")
        check(mtls.get(f"https://localhost:{s.http_port}/health").status_code == 200, "health needs no token")
        for what, http_client, url in (
                ("no client certificate", httpx2.Client(verify=ssl.create_default_context(cafile=p("ca.pem"))), base),
                ("plaintext to the TLS port", httpx2.Client(), f"http://localhost:{s.http_port}/v1")):
            try:
                openai.OpenAI(base_url=url, api_key=token, max_retries=0, http_client=http_client).models.list()
                check(False, f"{what} was served")
            except openai.APIConnectionError:
                pass
        print("TLS with client certificates and the bearer token; 401 in OpenAI's shape")


def main():
    ferry, proto_dir, workdir, models, readme = sys.argv[1:6]
    os.makedirs(workdir, exist_ok=True)
    pb, pbg = ferry_server.load_stubs(proto_dir, workdir)
    smollm2 = os.path.join(models, SMOLLM2)
    if check(os.path.exists(smollm2), f"{smollm2} is missing: deploy/install-deps.sh --for-tests installs it"):
        smollm2_checks(ferry, pb, pbg, smollm2, readme)
    model = ferry_server.stories_shaped_model(ferry, workdir)
    concurrency_checks(ferry, pb, pbg, model)
    slow_server_checks(ferry, pb, pbg, model)
    loading_check(ferry, workdir)
    tls_checks(ferry, model, workdir)
    for f in failures:
        print("FAIL:", f)
    print(f"openai SDK {openai.__version__}: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
