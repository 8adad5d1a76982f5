// `ferry loadgen`: a bounded load generator for a ferry server. C workers
// each run one streaming Generate at a time until N requests (or T seconds)
// are done, and report time to first token, inter-token latency (p50, p90,
// p99), tokens/s and errors by status code. It only talks to the --target
// it is given (default loopback). With --direct it drives the same load
// through an in-process runtime instead (no gRPC), the baseline for the
// service's overhead. With --http it sends the same requests through the
// OpenAI-compatible HTTP API (`ferry serve --http_port`) instead of gRPC. For
// soak runs it can mix in what real clients do wrong: cancels, requests of a
// few sessions (prefix reuse, slot preference), and malformed requests that
// must come back INVALID_ARGUMENT.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine/engine.h"
#include "service/server.h"

namespace ferry::service {

struct LoadgenOptions {
  std::string target = "127.0.0.1:50051";
  int concurrency = 1;
  int connections = 1;      // HTTP/2 connections the workers share (like ghz --connections)
  int requests = 0;         // total; 0 = run for duration_s
  double duration_s = 0;
  std::string prompt = "Once upon a time";
  int max_tokens = 64;
  float temperature = 0;
  bool ignore_eos = true;   // every request generates max_tokens (fixed work)
  std::string tls_ca, tls_cert, tls_key;  // PEM files; tls_ca set = TLS
  std::string auth_token;
  // The mix (gRPC only): a share of requests cancelled after a random number
  // of tokens (0 = before the first), a session id out of `sessions` on the
  // others (0 = none), and a share sent malformed.
  double cancel_fraction = 0;
  int sessions = 0;
  double malformed_fraction = 0;
  uint64_t seed = 1;
  // --http: the OpenAI-compatible API (POST /v1/completions, streamed) at --target.
  bool http = false;
  // --direct: an in-process runtime on this model instead of --target.
  bool direct = false;
  std::string model_path;
  engine::PlacementArgs placement;
  engine::RuntimeArgs runtime;  // its max_queue is unbounded here: loadgen measures, it does not refuse
};

struct LoadgenReport {
  int ok = 0;
  std::map<std::string, int> errors;  // status code name -> count, over requests sent well-formed and not cancelled
  int cancelled = 0;                  // cancelled by loadgen (any code)
  int malformed = 0;                  // sent malformed
  std::map<std::string, int> malformed_codes;  // what those got back (INVALID_ARGUMENT expected)
  double wall_s = 0;
  uint64_t tokens = 0;                // generated, over successful requests
  std::vector<double> ttft_s;         // per successful request
  std::vector<double> itl_s;          // every gap between consecutive tokens
  double tokens_per_s() const { return wall_s > 0 ? tokens / wall_s : 0; }
};

absl::StatusOr<LoadgenReport> RunLoadgen(const LoadgenOptions& options);
std::string LoadgenText(const LoadgenOptions& options, const LoadgenReport& report);

}  // namespace ferry::service
