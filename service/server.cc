#include "service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <thread>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/model/weights.h"
#include "engine/plan/planner.h"
#include "engine/quant/types.h"
#include "engine/runtime/runtime.h"
#include "engine/status.h"
#include "engine/text/chat.h"
#include "engine/text/tokenizer.h"
#include "ferry/v1/inference.grpc.pb.h"
#include "service/auth.h"
#include "service/http_api.h"
#include "service/requests.h"
#include "service/status_codes.h"

namespace ferry::service {

namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

constexpr char kServiceName[] = "ferry.v1.Inference";

v1::FinishReason ToProto(runtime::FinishReason r) {
  switch (r) {
    case runtime::FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case runtime::FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case runtime::FinishReason::kStopSequence: return v1::FINISH_REASON_STOP_SEQUENCE;
    case runtime::FinishReason::kCancelled:
    case runtime::FinishReason::kDeadline:
    case runtime::FinishReason::kShutdown: return v1::FINISH_REASON_CANCELLED;
    default: return v1::FINISH_REASON_UNSPECIFIED;
  }
}

// The gRPC status a request ends with.
grpc::Status FinalStatus(const runtime::Update& u) {
  switch (u.finish) {
    case runtime::FinishReason::kCancelled: return grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled");
    case runtime::FinishReason::kDeadline:
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the request's deadline passed before it finished");
    case runtime::FinishReason::kShutdown:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server shut down before the request finished; retry");
    case runtime::FinishReason::kError:
      return grpc::Status(grpc::StatusCode::INTERNAL, absl::StrCat("device fault: ", u.error.message()));
    default: return grpc::Status::OK;
  }
}

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(what, ": cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

// Runs the runtime's updates on a thread of their own. Turning an update
// into a message and starting its write (gRPC may run the write's syscalls
// inline) costs tens of microseconds per request; on the scheduler thread
// that would sit between one step and the next, here it overlaps the next
// step. One FIFO, so a request's updates keep their order.
class Server::Dispatcher {
 public:
  Dispatcher() : thread_([this] { Loop(); }) {}
  ~Dispatcher() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void Post(std::function<void()> fn) {
    bool wake;
    {
      std::lock_guard<std::mutex> l(mu_);
      wake = queue_.empty();
      queue_.push_back(std::move(fn));
    }
    if (wake) cv_.notify_one();
  }

 private:
  void Loop() {
    std::vector<std::function<void()>> batch;
    for (;;) {
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing left
        batch.swap(queue_);
      }
      for (auto& fn : batch) fn();
      batch.clear();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

// The opened engine and what the service derives from it once.
struct Server::Engine : engine::Engine {
  v1::ModelInfo info;
  RequestContext request_ctx;
};

class Server::Service final : public v1::Inference::CallbackService {
 public:
  Service(const ServeOptions& options, Metrics* metrics, Dispatcher* dispatcher)
      : options_(options), metrics_(metrics), dispatcher_(dispatcher) {}

  void Publish(Engine* engine) { engine_.store(engine, std::memory_order_release); }
  void StartDrain() { draining_.store(true); }

  // The engine, or why the call cannot run now.
  absl::StatusOr<Engine*> Ready(grpc::CallbackServerContext* ctx) const {
    if (!options_.auth_token.empty()) {
      // Every value: with several, gRPC's multimap keeps them all and any wrong one fails the call.
      std::vector<absl::string_view> values;
      const auto [begin, end] = ctx->client_metadata().equal_range("authorization");
      for (auto it = begin; it != end; ++it) values.emplace_back(it->second.data(), it->second.size());
      if (absl::Status s = CheckBearer(values, options_.auth_token); !s.ok()) return s;
    }
    if (draining_.load()) return absl::UnavailableError("the server is shutting down");
    Engine* e = engine_.load(std::memory_order_acquire);
    if (e == nullptr) return absl::UnavailableError("the model is still loading");
    if (!e->runtime->healthy()) return absl::UnavailableError("the engine is unhealthy after a device fault");
    return e;
  }

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext* ctx,
                                                           const v1::GenerateRequest* request) override;

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx, const v1::TokenizeRequest* req,
                                     v1::TokenizeResponse* resp) override {
    return Unary(ctx, [&](Engine& e) {
      return TokenizeText(*req, e.request_ctx, resp, [ctx] { return ctx->IsCancelled(); });
    });
  }

  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx, const v1::DetokenizeRequest* req,
                                       v1::DetokenizeResponse* resp) override {
    return Unary(ctx, [&](Engine& e) {
      const text::Tokenizer& tok = *e.tokenizer;
      std::vector<int32_t> ids(req->ids().begin(), req->ids().end());
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= tok.n_vocab()) {
          return absl::InvalidArgumentError(
              absl::StrCat("ids[", i, "] = ", ids[i], " is outside the vocabulary [0, ", tok.n_vocab(), ")"));
        }
      }
      resp->set_text(text::SanitizeUtf8(tok.Decode(ids)));
      return absl::OkStatus();
    });
  }

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx, const v1::GetModelInfoRequest*,
                                         v1::ModelInfo* resp) override {
    return Unary(ctx, [&](Engine& e) {
      *resp = e.info;
      resp->mutable_memory()->set_used_bytes(e.device->used());
      return absl::OkStatus();
    });
  }

  grpc::ServerUnaryReactor* Plan(grpc::CallbackServerContext* ctx, const v1::PlanRequest* req,
                                 v1::PlanResponse* resp) override {
    return Unary(ctx, [&](Engine& e) { return PlanFor(e, *req, resp); });
  }

  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx, const v1::GetStatsRequest*,
                                     v1::Stats* resp) override {
    return Unary(ctx, [&](Engine& e) {
      const runtime::RuntimeStats s = e.runtime->Stats();
      resp->set_slots(s.slots);
      resp->set_running(s.running);
      resp->set_waiting(s.waiting);
      resp->set_kv_tokens_used(s.kv_tokens_used);
      resp->set_kv_tokens_capacity(s.kv_tokens_capacity);
      resp->set_steps(s.steps);
      resp->set_prompt_tokens(s.prompt_tokens);
      resp->set_generated_tokens(s.generated_tokens);
      resp->set_requests_finished(s.requests_finished);
      resp->set_stream_bytes(s.stream.bytes_streamed);
      resp->set_stream_copy_busy_seconds(s.stream.copy_busy_s);
      resp->set_stream_compute_wait_seconds(s.stream.compute_wait_s);
      resp->set_step_seconds(s.stream.step_s);
      return absl::OkStatus();
    });
  }

  const ServeOptions& options() const { return options_; }

 private:
  // A unary call: `body(engine)` once the call may run (token, loading,
  // draining checked), its status as the call's.
  template <typename Body>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, Body body) {
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    absl::StatusOr<Engine*> e = Ready(ctx);
    r->Finish(ToGrpc(e.ok() ? body(**e) : e.status()));
    return r;
  }

  absl::Status PlanFor(const Engine& e, const v1::PlanRequest& req, v1::PlanResponse* out) const {
    plan::DeviceSpec spec = e.spec;
    if (!req.gpu_profile().empty()) {
      absl::StatusOr<plan::DeviceSpec> p = backend::FindGpuProfile(req.gpu_profile());
      if (!p.ok()) return p.status();
      spec = *p;
    }
    plan::PlanRequest pr;
    pr.n_ctx = req.has_context() ? req.context() : e.executor->n_ctx();
    pr.n_slots = req.has_slots() ? req.slots() : e.executor->n_seq();
    pr.max_batch = req.has_max_batch_tokens() ? req.max_batch_tokens() : e.executor->max_batch();
    pr.ring_depth = req.has_ring_depth() ? req.ring_depth() : options_.placement.ring_depth;
    if (pr.n_ctx < 1 || pr.n_ctx > (1 << 20)) {
      return absl::InvalidArgumentError(absl::StrCat("context = ", pr.n_ctx, " is outside [1, 1048576]"));
    }
    if (pr.n_slots < 1 || pr.n_slots > 4096) {
      return absl::InvalidArgumentError(absl::StrCat("slots = ", pr.n_slots, " is outside [1, 4096]"));
    }
    if (pr.max_batch < 1 || pr.max_batch > 65536) {
      return absl::InvalidArgumentError(absl::StrCat("max_batch_tokens = ", pr.max_batch, " is outside [1, 65536]"));
    }
    if (pr.ring_depth < 1 || pr.ring_depth > 64) {
      return absl::InvalidArgumentError(absl::StrCat("ring_depth = ", pr.ring_depth, " is outside [1, 64]"));
    }
    exec::KvType kv = exec::KvType::kF16;
    if (!req.kv_type().empty()) FERRY_ASSIGN_OR_RETURN(kv, engine::ParseKvType(req.kv_type()));
    pr.kv_bytes_per_elem = exec::KvBytesPerElement(kv);
    if (req.has_gpu_layers()) {
      if (req.gpu_layers() < 0 || req.gpu_layers() > e.model->config.n_layer) {
        return absl::InvalidArgumentError(
            absl::StrCat("gpu_layers = ", req.gpu_layers(), " is outside [0, ", e.model->config.n_layer, "]"));
      }
      pr.policy = plan::Policy::kLayers;
      pr.gpu_layers = req.gpu_layers();
    } else if (req.has_gpu_memory_bytes()) {
      pr.policy = plan::Policy::kBudget;
      pr.gpu_memory = req.gpu_memory_bytes();
    }
    absl::StatusOr<plan::Plan> p = plan::MakePlan(*e.model->file, e.model->config, pr, spec);
    if (!p.ok()) return p.status();
    out->set_layers(p->n_layers);
    out->set_layers_resident(p->resident_layers);
    out->set_head_resident(p->head_resident);
    out->set_ring_depth(p->ring_depth);
    out->set_slot_bytes(p->slot_bytes);
    out->set_weights_resident_bytes(p->weights_resident);
    out->set_staging_bytes(p->staging);
    out->set_kv_cache_bytes(p->kv_cache);
    out->set_workspace_bytes(p->workspace);
    out->set_overhead_bytes(p->overhead);
    out->set_margin_bytes(p->margin);
    out->set_total_bytes(p->total);
    out->set_budget_bytes(p->budget);
    out->set_pinned_host_bytes(p->host_pinned);
    out->set_gpu_fraction(p->gpu_fraction());
    out->set_device(spec.name);
    return absl::OkStatus();
  }

  const ServeOptions& options_;
  Metrics* const metrics_;  // may be null
  Dispatcher* const dispatcher_;
  std::atomic<Engine*> engine_{nullptr};
  std::atomic<bool> draining_{false};
};

namespace {

// One Generate call: the runtime's updates become messages, written one at a
// time (the next on OnWriteDone). The runtime never waits for a client: a
// client that stops reading is cut off once max_buffered tokens queue up.
class GenerateCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateCall(grpc::CallbackServerContext* ctx, int max_buffered, Metrics* metrics, Server::Dispatcher* dispatcher)
      : ctx_(ctx), max_buffered_(max_buffered), metrics_(metrics), dispatcher_(dispatcher) {}

  // Runs the request, or finishes the call with why it cannot run.
  void Begin(Server::Engine* engine, PreparedRequest prepared, bool echo, absl::Time deadline) {
    tokenizer_ = engine->tokenizer.get();
    logprobs_ = prepared.logprobs;
    const uint64_t seed = prepared.request.sampling.seed;
    if (echo) {
      v1::GenerateResponse m;
      m.set_echo_prompt(true);
      for (int32_t id : prepared.request.prompt) m.add_token_ids(id);
      m.set_text(text::SanitizeUtf8(prepared.prompt_text));
      buffered_tokens_ += m.token_ids_size();
      pending_.push_back(std::move(m));
    }
    seed_ = seed;
    prepared.request.deadline = deadline;
    const std::shared_ptr<Link> link = link_;
    std::lock_guard<std::mutex> l(link->mu);
    absl::StatusOr<std::shared_ptr<runtime::Handle>> h = engine->runtime->Submit(
        std::move(prepared.request), [this, link, d = dispatcher_](runtime::Update&& u) {
          d->Post([this, link, u = std::move(u)]() mutable {
            std::lock_guard<std::mutex> l(link->mu);
            if (link->alive) OnUpdate(std::move(u));
          });
        });
    if (!h.ok()) {
      if (h.status().code() == absl::StatusCode::kResourceExhausted) {
        ctx_->AddTrailingMetadata("grpc-retry-pushback-ms", "1000");
      }
      pending_.clear();
      FinishLocked(ToGrpc(h.status()));
      return;
    }
    handle_ = *h;
    if (!pending_.empty()) WriteNextLocked();
  }

  void OnWriteDone(bool ok) override {
    const std::shared_ptr<Link> link = link_;
    std::lock_guard<std::mutex> l(link->mu);
    writing_ = false;
    if (!pending_.empty()) pending_.pop_front();
    if (!ok) {  // the client is gone: the runtime drops the request at its next step
      pending_.clear();
      if (handle_) handle_->Cancel();
    }
    if (!pending_.empty()) {
      WriteNextLocked();
    } else if (final_) {
      FinishLocked(*final_);
    }
  }

  void OnCancel() override {
    const std::shared_ptr<Link> link = link_;
    std::lock_guard<std::mutex> l(link->mu);
    if (handle_) handle_->Cancel();
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> l(link_->mu);
      link_->alive = false;
    }
    delete this;
  }

  void FinishNow(const grpc::Status& status) {
    const std::shared_ptr<Link> link = link_;
    std::lock_guard<std::mutex> l(link->mu);
    FinishLocked(status);
  }

 private:
  // Shared with the runtime's sink, which may outlive the call. Its mutex
  // guards the whole call: OnDone takes it before deleting the call, so
  // nothing else is inside the call then; the mutex itself outlives the call.
  struct Link {
    std::mutex mu;
    bool alive = true;
  };

  void OnUpdate(runtime::Update&& u) {  // under link_->mu
    if (finished_ || final_) return;
    const bool last = u.finish != runtime::FinishReason::kNone;
    if (last && metrics_ != nullptr) metrics_->OnFinish(u.finish, u.usage, u.timings);
    const grpc::Status status = last ? FinalStatus(u) : grpc::Status::OK;
    if (status.ok() && !cut_off_) {
      v1::GenerateResponse m;
      for (const text::Sampled& t : u.tokens) {
        m.add_token_ids(t.token);
        if (logprobs_) {
          v1::TokenLogprob* lp = m.add_logprobs();
          lp->set_token_id(t.token);
          lp->set_logprob(t.logprob);
          for (const text::TokenLogprob& alt : t.top) {
            v1::TopLogprob* a = lp->add_top();
            a->set_token_id(alt.token);
            a->set_token(text::SanitizeUtf8(tokenizer_->TokenBytes(alt.token)));
            a->set_logprob(alt.logprob);
          }
        }
      }
      m.set_text(std::move(u.text));
      if (last) {
        m.set_finish_reason(ToProto(u.finish));
        v1::Usage* usage = m.mutable_usage();
        usage->set_prompt_tokens(u.usage.prompt_tokens);
        usage->set_completion_tokens(u.usage.completion_tokens);
        usage->set_cached_tokens(u.usage.cached_tokens);
        v1::Timings* t = m.mutable_timings();
        t->set_queue_seconds(u.timings.queue_s);
        t->set_time_to_first_token_seconds(u.timings.first_token_s);
        t->set_prefill_seconds(u.timings.prefill_s);
        t->set_decode_seconds(u.timings.decode_s);
      }
      buffered_tokens_ += m.token_ids_size();
      if (buffered_tokens_ > max_buffered_) {
        // The client stopped reading: end its request instead of holding
        // its slot or growing without bound.
        // The message being written stays: gRPC reads it until
        // OnWriteDone (or, before the reactor is bound, until then).
        cut_off_ = true;
        pending_.erase(writing_ ? std::next(pending_.begin()) : pending_.begin(), pending_.end());
        if (handle_) handle_->Cancel();
        ctx_->TryCancel();
      } else if (pending_.size() >= 2 && !pending_.back().echo_prompt()) {
        // A write is in flight and another waits: add to the waiting one.
        // Under load a message then carries several tokens, so a client
        // costs one write per step it keeps up with, not one per token.
        v1::GenerateResponse& back = pending_.back();
        back.mutable_token_ids()->MergeFrom(m.token_ids());
        back.mutable_logprobs()->MergeFrom(m.logprobs());
        back.mutable_text()->append(m.text());
        if (last) {
          back.set_finish_reason(m.finish_reason());
          *back.mutable_usage() = m.usage();
          *back.mutable_timings() = m.timings();
        }
      } else {
        pending_.push_back(std::move(m));
      }
    }
    if (last) final_ = cut_off_ ? grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                               absl::StrCat("the client did not read ", max_buffered_,
                                                            " buffered tokens; stream cut off"))
                                : status;
    if (!writing_ && !pending_.empty()) {
      WriteNextLocked();
    } else if (!writing_ && final_) {
      FinishLocked(*final_);
    }
  }

  void WriteNextLocked() {
    v1::GenerateResponse& m = pending_.front();
    buffered_tokens_ -= m.token_ids_size();
    if (!seed_sent_) {
      m.set_seed(seed_);
      seed_sent_ = true;
    }
    writing_ = true;
    StartWrite(&m);
  }

  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    if (metrics_ != nullptr) metrics_->OnRequestEnd(GrpcCodeName(status.error_code()));
    Finish(status);
  }

  grpc::CallbackServerContext* ctx_;
  const int max_buffered_;
  Metrics* const metrics_;
  Server::Dispatcher* const dispatcher_;
  const text::Tokenizer* tokenizer_ = nullptr;
  bool logprobs_ = false;
  uint64_t seed_ = 0;
  bool seed_sent_ = false;
  std::shared_ptr<Link> link_ = std::make_shared<Link>();
  std::deque<v1::GenerateResponse> pending_;  // front = the message being written
  bool writing_ = false;
  int buffered_tokens_ = 0;  // in pending_ messages not yet being written
  bool cut_off_ = false;
  bool finished_ = false;
  std::optional<grpc::Status> final_;
  std::shared_ptr<runtime::Handle> handle_;
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* Server::Service::Generate(grpc::CallbackServerContext* ctx,
                                                                          const v1::GenerateRequest* request) {
  auto* call = new GenerateCall(ctx, options_.limits.max_buffered_tokens, metrics_, dispatcher_);
  absl::StatusOr<Engine*> e = Ready(ctx);
  if (!e.ok()) {
    call->FinishNow(ToGrpc(e.status()));
    return call;
  }
  thread_local std::mt19937_64 rng{std::random_device{}()};
  absl::StatusOr<PreparedRequest> prepared =
      PrepareRequest(*request, (*e)->request_ctx, rng(), [ctx] { return ctx->IsCancelled(); });
  if (!prepared.ok()) {
    call->FinishNow(ToGrpc(prepared.status()));
    return call;
  }
  const auto d = ctx->deadline();
  const absl::Time deadline =
      d == std::chrono::system_clock::time_point::max() ? absl::InfiniteFuture() : absl::FromChrono(d);
  if (deadline <= absl::Now()) {
    call->FinishNow(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed before the request started"));
    return call;
  }
  call->Begin(*e, *std::move(prepared), request->echo(), deadline);
  return call;
}

Server::Server(const ServeOptions& options) : options_(options) {}

Server::~Server() {
  if (http_) http_->Stop();
  if (engine_ && engine_->runtime) engine_->runtime->CancelAll(runtime::FinishReason::kShutdown);
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  if (engine_) engine_->runtime.reset();  // ends whatever is left, before the calls' server goes
  if (server_) server_->Wait();
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServeOptions& options) {
  std::unique_ptr<Server> s(new Server(options));
  if (options.metrics_port >= 0) {
    FERRY_ASSIGN_OR_RETURN(s->metrics_, Metrics::Start(options.metrics_host, options.metrics_port));
  }
  if (options.http_port >= 0) FERRY_ASSIGN_OR_RETURN(s->http_, HttpApi::Start(options, s->metrics_.get()));
  s->dispatcher_ = std::make_unique<Dispatcher>();
  s->service_ = std::make_unique<Service>(s->options_, s->metrics_.get(), s->dispatcher_.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!options.tls_cert.empty() || !options.tls_key.empty() || !options.tls_client_ca.empty()) {
    if (options.tls_cert.empty() || options.tls_key.empty()) {
      return absl::InvalidArgumentError("TLS needs both --tls_cert and --tls_key");
    }
    std::string cert, key;
    FERRY_ASSIGN_OR_RETURN(cert, ReadFile(options.tls_cert, "--tls_cert"));
    FERRY_ASSIGN_OR_RETURN(key, ReadFile(options.tls_key, "--tls_key"));
    grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    if (!options.tls_client_ca.empty()) {
      FERRY_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(options.tls_client_ca, "--tls_client_ca"));
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    ssl.pem_key_cert_pairs.push_back({key, cert});
    creds = grpc::SslServerCredentials(ssl);
  }
  const std::string address = absl::StrCat(options.host.find(':') != std::string::npos ? "[" : "", options.host,
                                            options.host.find(':') != std::string::npos ? "]" : "", ":", options.port);
  builder.AddListeningPort(address, creds, &s->port_);
  builder.RegisterService(s->service_.get());
  const ServeLimits& l = options.limits;
  builder.SetMaxReceiveMessageSize(l.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, l.max_streams_per_connection);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, l.min_ping_interval_ms);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, " (in use, or not an address of this host)"));
  }
  grpc::HealthCheckServiceInterface* health = s->server_->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  return s;
}

absl::Status Server::Load() {
  engine::EngineSpec spec;
  spec.model_path = options_.model_path;
  spec.placement = options_.placement;
  spec.runtime = options_.runtime;
  spec.runtime.max_queue = options_.limits.max_queue;
  if (metrics_) spec.observer = [m = metrics_.get()](const runtime::StepInfo& step) { m->OnStep(step); };
  spec.progress = options_.progress;
  std::unique_ptr<engine::Engine> opened;
  FERRY_ASSIGN_OR_RETURN(opened, engine::OpenEngine(spec));
  auto e = std::make_unique<Engine>();
  static_cast<engine::Engine&>(*e) = std::move(*opened);

  const model::ModelConfig& c = e->model->config;
  const gguf::File& f = *e->model->file;
  e->request_ctx.tokenizer = e->tokenizer.get();
  e->request_ctx.n_ctx = e->executor->n_ctx();
  e->request_ctx.limits = options_.limits;
  e->request_ctx.max_token_bytes = MaxTokenBytes(*e->tokenizer);
  absl::StatusOr<absl::string_view> tmpl = f.GetString("tokenizer.chat_template");
  const text::Tokenizer& tok = *e->tokenizer;
  e->request_ctx.chat = text::ParseChatTemplate(tmpl.ok() ? *tmpl : absl::string_view(),
                                                tok.bos() >= 0 ? tok.piece(tok.bos()) : "",
                                                tok.eos() >= 0 ? tok.piece(tok.eos()) : "");

  v1::ModelInfo& info = e->info;
  info.set_path(options_.model_path);
  if (auto name = f.GetString("general.name"); name.ok()) info.set_name(std::string(*name));
  info.set_architecture(c.arch_name);
  std::map<std::string, std::pair<int, uint64_t>> by_type;
  uint64_t params = 0, bytes = 0;
  for (const gguf::TensorInfo& t : f.tensors()) {
    params += t.elements;
    bytes += t.bytes;
    auto& [n, b] = by_type[std::string(quant::Info(t.type).name)];
    ++n;
    b += t.bytes;
  }
  info.set_parameters(params);
  info.set_weight_bytes(bytes);
  for (const auto& [type, nb] : by_type) {
    v1::TypeBytes* tb = info.add_quant_mix();
    tb->set_type(type);
    tb->set_tensors(nb.first);
    tb->set_bytes(nb.second);
  }
  info.set_context_train(c.n_ctx_train);
  info.set_context(e->executor->n_ctx());
  info.set_vocab(c.n_vocab);
  info.set_layers(c.n_layer);
  info.set_layers_resident(e->executor->resident_layers());
  info.set_layers_streamed(e->executor->streamed_layers());
  info.set_layers_cpu(e->executor->cpu_layers());
  info.set_head_resident(e->executor->head_resident());
  info.set_ring_depth(e->executor->ring_depth());
  info.set_device(e->device->Describe());
  info.set_placement(e->executor->PlacementSummary());
  info.set_slots(e->executor->n_seq());
  info.set_max_batch_tokens(e->executor->max_batch());
  if (e->request_ctx.chat.ok()) info.set_chat_template(text::ChatFamilyName(e->request_ctx.chat->family));
  info.set_tokenizer(std::string(e->tokenizer->model()));
  info.set_bos(e->tokenizer->bos());
  info.set_eos(e->tokenizer->eos());
  v1::DeviceMemory* m = info.mutable_memory();
  const exec::DeviceUsage& u = e->executor->usage();
  m->set_total_bytes(e->spec.memory_bytes);
  m->set_weights_resident_bytes(u.weights_resident);
  m->set_staging_bytes(u.staging);
  m->set_kv_cache_bytes(u.kv_cache);
  m->set_workspace_bytes(u.workspace);
  m->set_overhead_bytes(e->spec.overhead_bytes);
  const uint64_t pinned = e->executor->host_pinned_bytes();
  m->set_pinned_host_bytes(pinned);

  if (metrics_) {
    LoadedInfo li;
    const std::string device = options_.placement.device;
    li.backend = device.substr(0, device.find(':'));
    li.architecture = c.arch_name;
    uint64_t most = 0;
    for (const auto& [type, nb] : by_type) {
      if (nb.second > most) {
        most = nb.second;
        li.quant = type;
      }
    }
    li.gpu_memory_total = e->spec.memory_bytes;
    li.planned = e->executor->usage();
    li.overhead = e->spec.overhead_bytes;
    li.pinned_host = pinned;
    li.layers_resident = e->executor->resident_layers();
    li.layers_streamed = e->executor->streamed_layers();
    li.layers_cpu = e->executor->cpu_layers();
    li.streamed_units = e->executor->placement().count(plan::Home::kStreamed);
    backend::Device* dev = e->device.get();
    runtime::Runtime* rt = e->runtime.get();
    metrics_->OnLoaded(li, [dev] { return dev->used(); }, [rt] { return rt->Stats(); });
  }
  engine_ = std::move(e);
  service_->Publish(engine_.get());
  if (http_) {
    const std::string& path = options_.model_path;
    http_->Publish({engine_->runtime.get(), engine_->tokenizer.get(), &engine_->request_ctx,
                    path.substr(path.find_last_of('/') + 1), engine_->executor->n_ctx()});
  }
  server_->GetHealthCheckService()->SetServingStatus(true);
  if (metrics_) metrics_->SetReady(true);
  return absl::OkStatus();
}

std::string Server::PlacementSummary() const {
  return engine_ ? engine_->executor->PlacementSummary() : std::string("(not loaded)");
}

bool Server::healthy() const {
  const bool ok = !engine_ || engine_->runtime->healthy();
  if (!ok && metrics_) metrics_->SetHealthy(false);
  return ok;
}

int Server::metrics_port() const { return metrics_ ? metrics_->port() : -1; }
int Server::http_port() const { return http_ ? http_->port() : -1; }

void Server::Drain(absl::Time deadline) {
  server_->GetHealthCheckService()->SetServingStatus(false);
  if (metrics_) metrics_->SetReady(false);
  service_->StartDrain();
  if (http_) http_->StartDrain();
  if (engine_) {
    engine_->runtime->StartDrain();
    if (!engine_->runtime->WaitIdle(deadline)) {
      engine_->runtime->CancelAll(runtime::FinishReason::kShutdown);
      engine_->runtime->WaitIdle(absl::Now() + absl::Seconds(5));
    }
  }
  if (http_) http_->WaitIdle(absl::Now() + absl::Seconds(2));  // the last events written
  // Every call has finished (or been told UNAVAILABLE): close the listener.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace ferry::service
