#include "service/metrics.h"

#include <CivetServer.h>
#include <civetweb.h>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "service/status_codes.h"

namespace ferry::service {
namespace {

using prometheus::Counter;
using prometheus::Gauge;
using prometheus::Histogram;

constexpr runtime::FinishReason kReasons[] = {
    runtime::FinishReason::kStop,     runtime::FinishReason::kLength,   runtime::FinishReason::kStopSequence,
    runtime::FinishReason::kCancelled, runtime::FinishReason::kDeadline, runtime::FinishReason::kShutdown,
    runtime::FinishReason::kError};

Histogram::BucketBoundaries Buckets(std::initializer_list<double> b) { return Histogram::BucketBoundaries(b); }

// The HTTP server's workers and how long a request may take to arrive (Start says why).
constexpr int kMetricsThreads = 16;
constexpr int kMetricsRequestTimeoutMs = 500;

// /healthz and /readyz answered before the exposer's handlers see the request.
std::atomic<bool> g_ready{false};
std::atomic<bool> g_healthy{true};

int BeginRequest(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  if (info == nullptr || info->local_uri == nullptr) return 0;
  bool ok;
  if (std::strcmp(info->local_uri, "/healthz") == 0) {
    ok = g_healthy.load();
  } else if (std::strcmp(info->local_uri, "/readyz") == 0) {
    ok = g_ready.load() && g_healthy.load();
  } else {
    return 0;
  }
  const char* body = ok ? "ok\n" : "not ready\n";
  mg_printf(conn,
            "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
            ok ? "200 OK" : "503 Service Unavailable", std::strlen(body), body);
  return ok ? 200 : 503;
}

}  // namespace

class Metrics::Impl : public prometheus::Collectable {
 public:
  Impl() : registry_(std::make_shared<prometheus::Registry>()) {
    auto& r = *registry_;
    auto gauge = [&](const char* name, const char* help) -> prometheus::Family<Gauge>& {
      return prometheus::BuildGauge().Name(name).Help(help).Register(r);
    };
    auto counter = [&](const char* name, const char* help) -> prometheus::Family<Counter>& {
      return prometheus::BuildCounter().Name(name).Help(help).Register(r);
    };
    auto histogram = [&](const char* name, const char* help) -> prometheus::Family<Histogram>& {
      return prometheus::BuildHistogram().Name(name).Help(help).Register(r);
    };
    gpu_total_ = &gauge("ferry_gpu_memory_total_bytes", "Device memory (or the --gpu_memory budget)").Add({});
    gpu_used_ = &gauge("ferry_gpu_memory_used_bytes", "Device memory ferry's allocator holds").Add({});
    auto& planned = gauge("ferry_gpu_memory_planned_bytes", "Device memory the placement plan gives each category");
    for (const char* c : {"weights_resident", "staging", "kv_cache", "workspace", "overhead"}) {
      planned_[c] = &planned.Add({{"category", c}});
    }
    pinned_ = &gauge("ferry_pinned_host_memory_bytes", "Host memory held page-locked: streamed layers, the step's embedding rows and logits").Add({});
    auto& layers = gauge("ferry_layers", "Transformer layers by placement");
    for (const char* p : {"resident", "streamed", "cpu"}) layers_[p] = &layers.Add({{"placement", p}});
    kv_usage_ = &gauge("ferry_kv_cache_usage_ratio", "Share of the KV cache positions held by running requests").Add({});

    stream_bytes_ = &counter("ferry_stream_bytes_total", "Bytes of streamed layers copied host-to-device").Add({});
    stream_copy_ = &counter("ferry_stream_copy_seconds_total", "Time the copy engine spent moving streamed layers").Add({});
    stream_wait_ =
        &counter("ferry_stream_wait_seconds_total", "Time compute stood waiting for a streamed layer's copy").Add({});
    compute_ = &counter("ferry_compute_seconds_total",
                        "Time the device spent computing steps (kernels; on the cpu device, the step's wall time)")
                    .Add({});
    cpu_compute_ = &counter("ferry_cpu_compute_seconds_total",
                            "Time the CPU spent computing the layers placed on it (--placement cpu or mixed)")
                        .Add({});
    stream_bw_ = &gauge("ferry_stream_bandwidth_bytes_per_second",
                        "Host-to-device bandwidth achieved while copying, over the last 32 steps")
                      .Add({});
    overlap_ = &gauge("ferry_stream_overlap_ratio",
                      "Share of copy time hidden behind compute over the last 32 steps (1 = fully overlapped)")
                    .Add({});
    transfer_ = &histogram("ferry_layer_transfer_seconds",
                           "Copy time per streamed layer (a step's copy time over its streamed layers)")
                     .Add({}, Buckets({1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                       2.5, 5, 10}));

    prompt_tokens_ = &counter("ferry_prompt_tokens_total", "Prompt tokens computed by prefill (cached ones excluded)").Add({});
    gen_tokens_ = &counter("ferry_generation_tokens_total", "Tokens generated and sent to clients").Add({});
    auto& requests = counter("ferry_requests_total", "Generate calls by the gRPC status they ended with");
    for (const char* c : kGrpcCodeNames) requests_[c] = &requests.Add({{"code", c}});
    auto& finish = counter("ferry_request_finish_total", "Requests the runtime ran, by why they ended");
    for (runtime::FinishReason reason : kReasons) {
      finish_[static_cast<int>(reason)] = &finish.Add({{"reason", runtime::FinishReasonName(reason)}});
    }
    running_ = &gauge("ferry_requests_running", "Requests holding a slot").Add({});
    waiting_ = &gauge("ferry_requests_waiting", "Requests in the admission queue").Add({});
    batch_ = &histogram("ferry_batch_size", "Requests computed together in one step")
                  .Add({}, Buckets({1, 2, 4, 8, 16, 32, 64, 128, 256}));
    auto& step = histogram("ferry_step_duration_seconds", "Forward steps by what they computed");
    const auto step_buckets = Buckets({1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30});
    for (const char* p : {"prefill", "decode", "mixed"}) step_[p] = &step.Add({{"phase", p}}, step_buckets);
    ttft_ = &histogram("ferry_time_to_first_token_seconds", "From a request's arrival to its first token")
                 .Add({}, Buckets({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}));
    tpot_ = &histogram("ferry_time_per_output_token_seconds", "A request's decode time over its tokens after the first")
                 .Add({}, Buckets({1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2}));
    duration_ = &histogram("ferry_request_duration_seconds", "From a request's arrival to its end")
                     .Add({}, Buckets({0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}));
    queue_ = &histogram("ferry_request_queue_seconds", "Time a request waited for a slot")
                  .Add({}, Buckets({1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}));
    ready_ = &gauge("ferry_ready", "1 while the model is loaded and the server takes requests, else 0").Add({});
    build_ = &gauge("ferry_build_info", "Version, backend in use and CUDA support of this build (value 1)");
    model_ = &gauge("ferry_model_info", "The loaded model (value 1)");
  }

  // Scrapes refresh the gauges that change between steps.
  std::vector<prometheus::MetricFamily> Collect() const override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (used_bytes_) gpu_used_->Set(static_cast<double>(used_bytes_()));
      if (stats_) {
        const runtime::RuntimeStats s = stats_();
        running_->Set(s.running);
        waiting_->Set(s.waiting);
        kv_usage_->Set(s.kv_tokens_capacity > 0 ? static_cast<double>(s.kv_tokens_used) / s.kv_tokens_capacity : 0);
      }
    }
    return registry_->Collect();
  }

  void OnLoaded(const LoadedInfo& info, std::function<uint64_t()> used, std::function<runtime::RuntimeStats()> stats) {
    std::lock_guard<std::mutex> l(mu_);
    gpu_total_->Set(static_cast<double>(info.gpu_memory_total));
    planned_["weights_resident"]->Set(static_cast<double>(info.planned.weights_resident));
    planned_["staging"]->Set(static_cast<double>(info.planned.staging));
    planned_["kv_cache"]->Set(static_cast<double>(info.planned.kv_cache));
    planned_["workspace"]->Set(static_cast<double>(info.planned.workspace));
    planned_["overhead"]->Set(static_cast<double>(info.overhead));
    pinned_->Set(static_cast<double>(info.pinned_host));
    layers_["resident"]->Set(info.layers_resident);
    layers_["streamed"]->Set(info.layers_streamed);
    layers_["cpu"]->Set(info.layers_cpu);
    streamed_units_ = info.streamed_units;
    model_->Add({{"architecture", info.architecture}, {"quant", info.quant}}).Set(1);
    build_->Add({{"version", FERRY_VERSION}, {"backend", info.backend}, {"cuda", FERRY_CUDA_VERSION}}).Set(1);
    used_bytes_ = std::move(used);
    stats_ = std::move(stats);
  }

  void OnStep(const runtime::StepInfo& s) {
    if (s.prefill_tokens > 0) prompt_tokens_->Increment(s.prefill_tokens);
    if (s.generated_tokens > 0) gen_tokens_->Increment(s.generated_tokens);
    batch_->Observe(s.sequences);
    const char* phase = s.decode_tokens == 0 ? "prefill" : s.prefill_tokens == 0 ? "decode" : "mixed";
    step_.at(phase)->Observe(s.seconds);
    // Streaming: deltas of the executor's running sums.
    const exec::StreamStats& c = s.stream;
    const double bytes = static_cast<double>(c.bytes_streamed - last_.bytes_streamed);
    const double copy = c.copy_busy_s - last_.copy_busy_s;
    const double wait = c.compute_wait_s - last_.compute_wait_s;
    const double compute = c.compute_s - last_.compute_s;
    const double cpu_compute = c.cpu_compute_s - last_.cpu_compute_s;
    last_ = c;
    if (compute > 0) compute_->Increment(compute);
    if (cpu_compute > 0) cpu_compute_->Increment(cpu_compute);
    if (bytes <= 0) return;
    stream_bytes_->Increment(bytes);
    if (copy > 0) stream_copy_->Increment(copy);
    if (wait > 0) stream_wait_->Increment(wait);
    if (streamed_units_ > 0) {
      for (int i = 0; i < streamed_units_; ++i) transfer_->Observe(copy / streamed_units_);
    }
    window_[window_pos_ % kWindow] = {bytes, copy, wait};
    ++window_pos_;
    double wb = 0, wc = 0, ww = 0;
    for (const auto& w : window_) {
      wb += w[0];
      wc += w[1];
      ww += w[2];
    }
    if (wc > 0) {
      stream_bw_->Set(wb / wc);
      overlap_->Set(std::clamp(1.0 - ww / wc, 0.0, 1.0));
    }
  }

  void OnRequestEnd(const char* code) {
    auto it = requests_.find(code);
    (it != requests_.end() ? it->second : requests_.at("UNKNOWN"))->Increment();
  }

  void OnFinish(runtime::FinishReason reason, const runtime::Usage& usage, const runtime::Timings& t) {
    if (Counter* c = finish_[static_cast<int>(reason)]) c->Increment();
    queue_->Observe(t.queue_s);
    if (usage.completion_tokens > 0) {
      ttft_->Observe(t.first_token_s);
      duration_->Observe(t.first_token_s + t.decode_s);
      if (usage.completion_tokens > 1) tpot_->Observe(t.decode_s / (usage.completion_tokens - 1));
    } else {
      duration_->Observe(t.queue_s + t.prefill_s);
    }
  }

  std::shared_ptr<prometheus::Registry> registry_;
  Gauge* ready_;

 private:
  static constexpr int kWindow = 32;
  mutable std::mutex mu_;  // OnLoaded against scrapes
  std::function<uint64_t()> used_bytes_;
  std::function<runtime::RuntimeStats()> stats_;
  Gauge *gpu_total_, *gpu_used_, *pinned_, *kv_usage_, *stream_bw_, *overlap_, *running_, *waiting_;
  std::map<std::string, Gauge*> planned_, layers_;
  Counter *stream_bytes_, *stream_copy_, *stream_wait_, *compute_, *cpu_compute_, *prompt_tokens_, *gen_tokens_;
  std::map<std::string, Counter*> requests_;
  std::array<Counter*, 8> finish_{};
  Histogram *transfer_, *batch_, *ttft_, *tpot_, *duration_, *queue_;
  std::map<std::string, Histogram*> step_;
  prometheus::Family<Gauge>* build_;
  prometheus::Family<Gauge>* model_;
  int streamed_units_ = 0;
  // Scheduler thread only.
  exec::StreamStats last_;
  std::array<std::array<double, 3>, kWindow> window_{};
  uint64_t window_pos_ = 0;
};

Metrics::Metrics() = default;
Metrics::~Metrics() {
  exposer_.reset();  // no scrape runs after this
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Start(const std::string& host, int port) {
  static CivetCallbacks callbacks;
  callbacks.begin_request = BeginRequest;
  const std::string address =
      host.find(':') != std::string::npos ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
  std::unique_ptr<Metrics> m(new Metrics());
  m->impl_ = std::make_shared<Impl>();
  // civetweb gives each connection a worker thread from accept until the
  // response is written, and waits request_timeout_ms for a request to
  // arrive in full (30 s by default). With its 2 threads, two sockets that
  // sent half a request line silenced /healthz (a liveness failure) for 30 s.
  // Now: 16 workers, so a handful of idle or slow connections leaves most
  // free, and 500 ms for a request to arrive, so even when every worker is
  // held a probe waits at most about that long per 16 held connections.
  // A scrape's request is one small packet; a loopback or in-cluster
  // scraper sends it in well under a millisecond.
  const std::vector<std::string> options = {"listening_ports", address, "num_threads", std::to_string(kMetricsThreads),
                                            "request_timeout_ms", std::to_string(kMetricsRequestTimeoutMs)};
  try {  // civetweb reports a port it cannot bind by throwing
    m->exposer_ = std::make_unique<prometheus::Exposer>(options, &callbacks);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", address, ": ", e.what()));
  }
  m->exposer_->RegisterCollectable(std::weak_ptr<prometheus::Collectable>(m->impl_));
  return m;
}

int Metrics::port() const {
  const std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports[0];
}

void Metrics::OnLoaded(const LoadedInfo& info, std::function<uint64_t()> used_bytes,
                       std::function<runtime::RuntimeStats()> stats) {
  impl_->OnLoaded(info, std::move(used_bytes), std::move(stats));
}
void Metrics::SetReady(bool ready) {
  g_ready.store(ready);
  impl_->ready_->Set(ready ? 1 : 0);
}
void Metrics::SetHealthy(bool healthy) { g_healthy.store(healthy); }
void Metrics::OnStep(const runtime::StepInfo& step) { impl_->OnStep(step); }
void Metrics::OnRequestEnd(const char* code) { impl_->OnRequestEnd(code); }
void Metrics::OnFinish(runtime::FinishReason reason, const runtime::Usage& usage, const runtime::Timings& timings) {
  impl_->OnFinish(reason, usage, timings);
}

}  // namespace ferry::service
