// Prometheus metrics for the service: the engine reports plain stats (the
// runtime's step observer, its counters, the executor's stream stats), this
// file turns them into ferry_* metrics on prometheus-cpp's exposer, with
// /healthz and /readyz beside /metrics for plain HTTP checkers.
//
// Every handle is created at start-up (label values come from fixed sets:
// status codes, finish reasons, phases, categories, never from requests).
// The token hot path touches only atomic counters, once per step; histograms
// (which take a mutex in prometheus-cpp) are observed once per step or once
// per request.
//
// Histogram buckets, chosen for LLM serving (seconds unless noted):
//   time to first token, queue:  5 ms .. 60 s (queue from 1 ms)
//   time per output token:       1 ms .. 2 s  (CPU decode ~1-100 ms, streamed GPU decode 10-500 ms)
//   request duration:            50 ms .. 600 s
//   step duration:               1 ms .. 30 s (a streamed 70B step on PCIe is seconds)
//   layer transfer:              100 us .. 10 s
//   batch size (requests/step):  1 .. 256, powers of two
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/exec/forward.h"
#include "engine/runtime/runtime.h"

namespace prometheus {
class Exposer;
}

namespace ferry::service {

// What the metrics say about a loaded engine (fixed for its life).
struct LoadedInfo {
  std::string backend;        // cpu, sim, cuda
  std::string architecture;
  std::string quant;          // the tensor type holding the most bytes
  uint64_t gpu_memory_total = 0;
  exec::DeviceUsage planned;  // device bytes by category
  uint64_t overhead = 0;
  uint64_t pinned_host = 0;
  int layers_resident = 0, layers_streamed = 0, layers_cpu = 0;
  int streamed_units = 0;     // units crossing PCIe each step (layers, and the head when streamed)
};

class Metrics {
 public:
  // Listens on host:port (port 0: any free one).
  static absl::StatusOr<std::unique_ptr<Metrics>> Start(const std::string& host, int port);
  ~Metrics();

  int port() const;

  // Once the engine is up; `used_bytes` and `stats` are read at each scrape.
  void OnLoaded(const LoadedInfo& info, std::function<uint64_t()> used_bytes,
                std::function<runtime::RuntimeStats()> stats);
  void SetReady(bool ready);    // /readyz 200 or 503
  void SetHealthy(bool healthy);  // /healthz 200 or 503

  // From the runtime's step observer (the scheduler thread).
  void OnStep(const runtime::StepInfo& step);
  // A Generate call ended with this gRPC code (name, e.g. "OK"); the finish
  // reason and timings when the runtime ran it.
  void OnRequestEnd(const char* code);
  // An HTTP completions request ended with this status ("200", "429"; "499"
  // when the client went away first).
  void OnHttpRequestEnd(const std::string& code);
  void OnFinish(runtime::FinishReason reason, const runtime::Usage& usage, const runtime::Timings& timings);

  class Impl;

 private:
  Metrics();
  std::shared_ptr<Impl> impl_;                  // the exposer holds a weak reference
  std::unique_ptr<prometheus::Exposer> exposer_;  // destroyed first
};

}  // namespace ferry::service
