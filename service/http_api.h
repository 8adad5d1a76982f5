// `ferry serve --http_port N`: OpenAI's HTTP API beside gRPC, on the same
// runtime (one queue, one set of slots, the same limits and metrics):
// GET /v1/models, POST /v1/completions and /v1/chat/completions (JSON, or
// server-sent events with stream = true), GET /health. TLS, mutual TLS and
// the bearer token are gRPC's (--tls_cert, --tls_key, --tls_client_ca,
// --auth_token_file).
//
// Boost.Beast on Asio: every connection is a few hundred bytes of state on
// two event-loop threads, not a thread of its own, so hundreds of streams
// cost no more than their sockets. A request's tokens reach its connection
// as posts from the runtime's scheduler thread; one write is in flight per
// connection, and what arrives meanwhile joins the next write.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/runtime/runtime.h"
#include "engine/text/tokenizer.h"
#include "service/metrics.h"
#include "service/requests.h"
#include "service/server.h"

namespace ferry::service {

// What the HTTP API uses of a loaded engine (owned by the gRPC server).
struct HttpEngine {
  runtime::Runtime* runtime = nullptr;
  const text::Tokenizer* tokenizer = nullptr;
  const RequestContext* request_ctx = nullptr;
  std::string model_id;  // the model file's name: /v1/models and every response's "model"
  int context = 0;       // positions per request
};

class HttpApi {
 public:
  // Listens on options.host:options.http_port (0: any free port); answers
  // 503 until Publish. `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<HttpApi>> Start(const ServeOptions& options, Metrics* metrics);
  ~HttpApi();

  void Publish(const HttpEngine& engine);  // the engine outlives Stop
  // New requests 503 from now on; running ones go on.
  void StartDrain();
  // Waits until no request is in progress (its last bytes written), or `deadline`.
  bool WaitIdle(absl::Time deadline);
  // Closes the listener and every connection; no handler runs after it returns.
  void Stop();
  int port() const;

  class Impl;

 private:
  explicit HttpApi(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::service
