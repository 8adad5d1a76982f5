#include "service/loadgen.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <limits>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/model/weights.h"
#include "engine/runtime/runtime.h"
#include "engine/status.h"
#include "engine/text/tokenizer.h"
#include "ferry/v1/inference.grpc.pb.h"
#include "service/loadgen_driver.h"
#include "service/status_codes.h"

namespace ferry::service {
namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Malformed requests, each refused by the server with INVALID_ARGUMENT.
constexpr int kMalformations = 8;
void Malform(int kind, v1::GenerateRequest* r) {
  switch (kind) {
    case 0: r->mutable_sampling()->set_temperature(-1); break;
    case 1: r->set_max_tokens(-5); break;
    case 2: (*r->mutable_sampling()->mutable_logit_bias())[1] = std::numeric_limits<float>::infinity(); break;
    case 3: r->set_text("bad \xff utf-8"); break;
    case 4: for (int i = 0; i < 1000; ++i) r->add_stop_token_ids(i); break;
    case 5: r->set_session_id(std::string(1000, 's')); break;
    case 6: r->set_logprobs(true); r->set_top_logprobs(99); break;
    default: r->mutable_tokens()->add_ids(-7); break;
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class GrpcDriver final : public Driver {
 public:
  explicit GrpcDriver(const LoadgenOptions& o) : o_(o) {
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    if (!o.tls_ca.empty()) {
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = ReadFile(o.tls_ca);
      if (!o.tls_cert.empty()) {
        ssl.pem_cert_chain = ReadFile(o.tls_cert);
        ssl.pem_private_key = ReadFile(o.tls_key);
      }
      creds = grpc::SslCredentials(ssl);
    }
    // --connections HTTP/2 connections; worker w uses connection w % N
    // (distinct channel arguments keep gRPC from sharing one).
    for (int i = 0; i < std::min(o.connections, o.concurrency); ++i) {
      grpc::ChannelArguments args;
      args.SetInt("loadgen.worker", i);  // distinct arguments: a channel of its own
      stubs_.push_back(v1::Inference::NewStub(grpc::CreateCustomChannel(o.target, creds, args)));
    }
    request_.set_text(o.prompt);
    request_.set_max_tokens(o.max_tokens);
    request_.mutable_sampling()->set_temperature(o.temperature);
    request_.set_ignore_eos(o.ignore_eos);
  }

  // The callback API: arrivals are stamped on gRPC's own thread as each
  // message lands, and the worker sleeps until the call ends, so the client
  // costs no thread hop per token.
  Outcome Run(int worker, const Mix& plan) override {
    class Call final : public grpc::ClientReadReactor<v1::GenerateResponse> {
     public:
      Call(v1::Inference::Stub* stub, const v1::GenerateRequest& req, const std::string& token, int cancel_after)
          : cancel_after_(cancel_after) {
        if (!token.empty()) ctx_.AddMetadata("authorization", "Bearer " + token);
        out_.start = Clock::now();
        stub->async()->Generate(&ctx_, &req, this);
        StartRead(&msg_);
        StartCall();
        if (cancel_after_ == 0) ctx_.TryCancel();
      }
      void OnReadDone(bool ok) override {
        if (!ok) return;
        const Clock::time_point now = Clock::now();
        for (int i = 0; i < msg_.token_ids_size(); ++i) out_.arrivals.push_back(now);
        if (cancel_after_ > 0 && static_cast<int>(out_.arrivals.size()) >= cancel_after_) ctx_.TryCancel();
        StartRead(&msg_);
      }
      void OnDone(const grpc::Status& s) override {
        std::lock_guard<std::mutex> l(mu_);
        out_.code = GrpcCodeName(s.error_code());
        done_ = true;
        cv_.notify_one();
      }
      Outcome Wait() {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return done_; });
        return std::move(out_);
      }

     private:
      const int cancel_after_;
      grpc::ClientContext ctx_;
      v1::GenerateResponse msg_;
      Outcome out_;
      std::mutex mu_;
      std::condition_variable cv_;
      bool done_ = false;
    };
    v1::GenerateRequest req = request_;
    if (plan.session >= 0) {
      // A session's requests share their prompt: the later ones reuse its KV.
      req.set_session_id(absl::StrCat("loadgen-session-", plan.session));
      req.set_text(absl::StrCat(o_.prompt, " (conversation ", plan.session, ")"));
    }
    if (plan.malformed >= 0) Malform(plan.malformed, &req);
    Call call(stubs_[worker % stubs_.size()].get(), req, o_.auth_token, plan.cancel_after);
    Outcome out = call.Wait();
    out.cancelled = plan.cancel_after >= 0;
    out.malformed = plan.malformed >= 0;
    return out;
  }

 private:
  const LoadgenOptions& o_;
  std::vector<std::unique_ptr<v1::Inference::Stub>> stubs_;
  v1::GenerateRequest request_;
};

class DirectDriver final : public Driver {
 public:
  static absl::StatusOr<std::unique_ptr<DirectDriver>> Create(const LoadgenOptions& o) {
    auto d = std::unique_ptr<DirectDriver>(new DirectDriver(o));
    engine::EngineSpec spec;
    spec.model_path = o.model_path;
    spec.placement = o.placement;
    spec.runtime = o.runtime;
    spec.runtime.max_queue = 1 << 20;
    FERRY_ASSIGN_OR_RETURN(d->engine_, engine::OpenEngine(spec));
    d->prompt_ = d->engine_->tokenizer->Encode(o.prompt, d->engine_->tokenizer->add_bos());
    return d;
  }

  Outcome Run(int, const Mix&) override {
    struct Inbox {
      std::mutex mu;
      std::condition_variable cv;
      std::deque<runtime::Update> updates;
    };
    auto inbox = std::make_shared<Inbox>();
    runtime::Request r;
    r.prompt = prompt_;
    r.max_tokens = o_.max_tokens;
    r.sampling.temperature = o_.temperature;
    r.ignore_eos = o_.ignore_eos;
    r.text_at_start = false;
    Outcome out;
    out.start = Clock::now();
    absl::StatusOr<std::shared_ptr<runtime::Handle>> h = engine_->runtime->Submit(std::move(r), [inbox](runtime::Update&& u) {
      {
        std::lock_guard<std::mutex> l(inbox->mu);
        inbox->updates.push_back(std::move(u));
      }
      inbox->cv.notify_one();
    });
    if (!h.ok()) {
      out.code = absl::StatusCodeToString(h.status().code());
      return out;
    }
    for (;;) {
      std::unique_lock<std::mutex> l(inbox->mu);
      inbox->cv.wait(l, [&] { return !inbox->updates.empty(); });
      runtime::Update u = std::move(inbox->updates.front());
      inbox->updates.pop_front();
      l.unlock();
      const Clock::time_point now = Clock::now();
      for (size_t i = 0; i < u.tokens.size(); ++i) out.arrivals.push_back(now);
      if (u.finish != runtime::FinishReason::kNone) {
        if (u.finish == runtime::FinishReason::kError) out.code = "INTERNAL";
        return out;
      }
    }
  }

 private:
  explicit DirectDriver(const LoadgenOptions& o) : o_(o) {}
  const LoadgenOptions& o_;
  std::unique_ptr<engine::Engine> engine_;
  std::vector<int32_t> prompt_;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

}  // namespace

absl::StatusOr<LoadgenReport> RunLoadgen(const LoadgenOptions& o) {
  if (o.concurrency < 1) return absl::InvalidArgumentError("--concurrency must be >= 1");
  if (o.connections < 1) return absl::InvalidArgumentError("--connections must be >= 1");
  if ((o.requests > 0) == (o.duration_s > 0)) {
    return absl::InvalidArgumentError("give one of --requests N or --duration SECONDS");
  }
  if (o.max_tokens < 1) return absl::InvalidArgumentError("-n must be >= 1");
  if (!(o.cancel_fraction >= 0 && o.cancel_fraction <= 1) || !(o.malformed_fraction >= 0 && o.malformed_fraction <= 1) ||
      o.sessions < 0) {
    return absl::InvalidArgumentError("--cancel_fraction and --malformed_fraction must be in [0, 1], --sessions >= 0");
  }
  if ((o.direct || o.http) && (o.cancel_fraction > 0 || o.malformed_fraction > 0 || o.sessions > 0)) {
    return absl::InvalidArgumentError(
        "--direct and --http run plain requests: no --cancel_fraction, --malformed_fraction or --sessions");
  }
  std::unique_ptr<Driver> driver;
  if (o.direct && o.http) return absl::InvalidArgumentError("give one of --direct and --http");
  if (o.direct) {
    FERRY_ASSIGN_OR_RETURN(driver, DirectDriver::Create(o));
  } else if (o.http) {
    driver = MakeHttpDriver(o);
  } else {
    driver = std::make_unique<GrpcDriver>(o);
  }
  std::atomic<int> next{0};
  std::mutex mu;
  LoadgenReport report;
  const Clock::time_point start = Clock::now();
  const Clock::time_point end =
      o.duration_s > 0 ? start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s))
                       : Clock::time_point::max();
  std::vector<std::thread> workers;
  for (int w = 0; w < o.concurrency; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937_64 rng(o.seed * 1000003 + w);
      std::uniform_real_distribution<double> unit(0, 1);
      for (;;) {
        if (o.requests > 0 ? next.fetch_add(1) >= o.requests : Clock::now() >= end) return;
        Mix plan;
        if (unit(rng) < o.malformed_fraction) {
          plan.malformed = static_cast<int>(rng() % kMalformations);
        } else if (unit(rng) < o.cancel_fraction) {
          plan.cancel_after = static_cast<int>(rng() % (o.max_tokens + 1));
        }
        if (o.sessions > 0) plan.session = static_cast<int>(rng() % o.sessions);
        const Outcome out = driver->Run(w, plan);
        std::lock_guard<std::mutex> l(mu);
        if (out.malformed) {
          ++report.malformed;
          ++report.malformed_codes[out.code];
          continue;
        }
        if (out.cancelled) {
          ++report.cancelled;
          if (out.code == "OK" || out.code == "CANCELLED") continue;  // it may end before the cancel lands
        }
        if (out.code != "OK") {
          ++report.errors[out.code];
          continue;
        }
        ++report.ok;
        report.tokens += out.tokens >= 0 ? out.tokens : out.arrivals.size();
        if (!out.arrivals.empty()) report.ttft_s.push_back(Seconds(out.arrivals[0] - out.start));
        for (size_t i = 1; i < out.arrivals.size(); ++i) {
          report.itl_s.push_back(Seconds(out.arrivals[i] - out.arrivals[i - 1]));
        }
      }
    });
  }
  for (auto& t : workers) t.join();
  report.wall_s = Seconds(Clock::now() - start);
  return report;
}

std::string LoadgenText(const LoadgenOptions& o, const LoadgenReport& r) {
  std::string out = absl::StrFormat(
      "loadgen: %s, concurrency %d, %d tokens per request\n",
      o.direct ? std::string("in-process runtime (--direct, no gRPC)")
      : o.http ? absl::StrCat("target ", o.target, " over HTTP (/v1/completions, server-sent events; one connection "
                              "per worker; latencies per event)")
               : absl::StrCat("target ", o.target, " over ", std::min(o.connections, o.concurrency), " connection(s)"),
      o.concurrency, o.max_tokens);
  absl::StrAppend(&out, absl::StrFormat("requests: %d ok", r.ok));
  for (const auto& [code, n] : r.errors) absl::StrAppend(&out, ", ", n, " ", code);
  absl::StrAppend(&out, absl::StrFormat(" in %.2f s (%.2f requests/s)\n", r.wall_s, r.wall_s > 0 ? r.ok / r.wall_s : 0));
  if (r.cancelled > 0 || r.malformed > 0) {
    absl::StrAppend(&out, absl::StrFormat("mix: %d cancelled by loadgen; %d sent malformed, answered", r.cancelled,
                                          r.malformed));
    for (const auto& [code, n] : r.malformed_codes) absl::StrAppend(&out, " ", n, " ", code);
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppend(&out, absl::StrFormat("throughput: %.1f tokens/s (%llu tokens)\n", r.tokens_per_s(),
                                        static_cast<unsigned long long>(r.tokens)));
  const auto line = [&](const char* name, const std::vector<double>& v) {
    absl::StrAppend(&out, absl::StrFormat("%-22s p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms  (%zu samples)\n", name,
                                          1e3 * Percentile(v, 0.5), 1e3 * Percentile(v, 0.9), 1e3 * Percentile(v, 0.99),
                                          v.size()));
  };
  line("time to first token", r.ttft_s);
  line("inter-token latency", r.itl_s);
  return out;
}

}  // namespace ferry::service
