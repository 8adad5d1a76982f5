#include "service/serve.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace ferry::service {
namespace {

// The next SIGTERM/SIGINT within `timeout`, or 0.
int WaitSignal(const sigset_t& set, absl::Duration timeout) {
  const timespec ts = absl::ToTimespec(timeout);
  const int sig = sigtimedwait(&set, nullptr, &ts);
  return sig > 0 ? sig : 0;
}

}  // namespace

int Serve(const ServeOptions& options, absl::Duration drain) {
  // Signals are taken synchronously by this thread; every thread started
  // from here (gRPC's, the runtime's) inherits the blocked mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "ferry serve: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  const std::string where = absl::StrCat(options.host, ":", (*server)->port());
  std::printf("ferry: listening on %s (gRPC%s%s); health NOT_SERVING while %s loads\n", where.c_str(),
              options.tls_cert.empty() ? "" : options.tls_client_ca.empty() ? ", TLS" : ", mutual TLS",
              options.auth_token.empty() ? "" : ", bearer token", options.model_path.c_str());
  // Plaintext without a token on an address other hosts reach: say so.
  const bool loopback = options.host == "127.0.0.1" || options.host == "::1" || options.host == "localhost";
  if (!loopback && options.tls_cert.empty() && options.auth_token.empty()) {
    std::printf("ferry: warning: %s is reachable beyond this host and takes every call in plaintext without a token "
                "(--tls_cert/--tls_key, --auth_token_file)\n",
                where.c_str());
  }
  if ((*server)->http_port() >= 0) {
    const std::string host = options.host.find(':') != std::string::npos ? "[" + options.host + "]" : options.host;
    std::printf("ferry: OpenAI-compatible API on %s://%s:%d/v1 (/health)%s; 503 while the model loads\n",
                options.tls_cert.empty() ? "http" : "https", host.c_str(), (*server)->http_port(),
                options.auth_token.empty() ? "" : ", bearer token");
  }
  if ((*server)->metrics_port() >= 0) {
    std::printf("ferry: metrics on http://%s:%d/metrics (/healthz, /readyz)\n", options.metrics_host.c_str(),
                (*server)->metrics_port());
  }
  std::fflush(stdout);

  const absl::Time load_start = absl::Now();
  std::atomic<bool> loaded{false};
  absl::Status load_status;
  std::thread loader([&] {
    load_status = (*server)->Load();
    loaded.store(true);
  });
  while (!loaded.load()) {
    if (const int sig = WaitSignal(set, absl::Milliseconds(50)); sig != 0) {
      std::fprintf(stderr, "ferry serve: %s during model load: exiting without serving\n",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
      std::fflush(nullptr);
      // The loader cannot be interrupted. Not 0: the service never ran, and
      // a supervisor must not take this for a clean stop. 128 + the signal,
      // as a shell reports a process the signal ended.
      _exit(128 + sig);
    }
  }
  loader.join();
  if (!load_status.ok()) {
    std::fprintf(stderr, "ferry serve: cannot load %s: %s\n", options.model_path.c_str(),
                 std::string(load_status.message()).c_str());
    return 1;
  }
  std::printf("ferry: %s\n", (*server)->PlacementSummary().c_str());
  std::printf("ferry: serving ferry.v1.Inference on %s (loaded in %.1f s, %d slots, %d tokens per step)\n",
              where.c_str(), absl::ToDoubleSeconds(absl::Now() - load_start), options.runtime.slots,
              options.runtime.batch);
  std::fflush(stdout);

  for (;;) {
    const int sig = WaitSignal(set, absl::Milliseconds(200));
    if (!(*server)->healthy()) {
      std::fprintf(stderr, "ferry serve: device fault: the engine is unusable; exiting\n");
      (*server)->Drain(absl::Now());
      return 3;
    }
    if (sig != 0) {
      std::printf("ferry: %s: draining (in-flight requests get %.0f s), health NOT_SERVING\n",
                  sig == SIGTERM ? "SIGTERM" : "SIGINT", absl::ToDoubleSeconds(drain));
      std::fflush(stdout);
      (*server)->Drain(absl::Now() + drain);
      std::printf("ferry: drained; bye\n");
      std::fflush(stdout);
      return 0;
    }
  }
}

}  // namespace ferry::service
