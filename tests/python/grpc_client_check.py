"""ferry serve through the PyPI grpcio client (an implementation ferry did not
write): stubs generated from proto/ by grpcio-tools, greedy generation from
stories260K checked against the text its author documents
(../shared/models/README.md), the standard health service, and server
reflection listing ferry.v1.Inference.

usage: grpc_client_check.py FERRY_BINARY PROTO_DIR WORKDIR SHARED_MODELS_DIR
"""
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import ferry_server

GOLDEN = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
          "One day, she saw a big, red ball. She wanted to play with it, but it was too high.")


def main():
    ferry, proto_dir, workdir, models = sys.argv[1:5]
    model = os.path.join(models, "stories260K-f32.gguf")
    if not os.path.exists(model):
        print(f"SKIP: needs {model} (the ../shared/models folder beside the repo)")
        return 0
    pb, pbg = ferry_server.load_stubs(proto_dir, workdir)
    with ferry_server.Server(ferry, ["--model", model, "--ctx", "512"]) as server:
        port = server.port
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pbg.InferenceStub(channel)

        failures = []
        req = pb.GenerateRequest(tokens=pb.TokenIds(ids=[1]), max_tokens=80,
                                 sampling=pb.SamplingParams(temperature=0))
        text = ""
        last = None
        for msg in stub.Generate(req, timeout=60):
            text += msg.text
            last = msg
        if not text.startswith(GOLDEN):
            failures.append(f"greedy text from BOS differs:\n  got  {text!r}\n  want {GOLDEN!r}...")
        if last.finish_reason != pb.FINISH_REASON_LENGTH or last.usage.completion_tokens != 80:
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
        print(f"grpcio {grpc.__version__}: greedy text, INVALID_ARGUMENT, health and reflection ({len(services)} "
              "services) as expected")
        return 0


if __name__ == "__main__":
    sys.exit(main())
