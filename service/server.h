// `ferry serve`: the gRPC service. It listens at once (health NOT_SERVING,
// RPCs UNAVAILABLE "loading"), loads the model, plans the placement and
// starts the continuous-batching runtime, then serves ferry.v1.Inference,
// grpc.health.v1.Health and server reflection until it is drained.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/exec/forward.h"
#include "service/limits.h"
#include "service/metrics.h"
#include "engine/engine/engine.h"

namespace grpc {
class Server;
}

namespace ferry::service {

class HttpApi;

struct ServeOptions {
  std::string model_path;
  std::string host = "127.0.0.1";
  int port = 50051;  // 0 = any free port (printed)
  engine::PlacementArgs placement;
  engine::RuntimeArgs runtime;  // its max_queue is limits.max_queue
  std::function<void(const std::string&)> progress;  // loading steps that take a while
  ServeLimits limits;
  std::string tls_cert, tls_key;  // PEM files: TLS
  std::string tls_client_ca;      // PEM file: also require client certificates signed by it (mutual TLS)
  std::string auth_token;         // non-empty: every Inference call needs "authorization: Bearer <token>"
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 9400;        // /metrics, /healthz, /readyz; 0 = any free port, -1 = none
  int http_port = -1;             // OpenAI-compatible HTTP API on `host` (service/http_api.h); 0 = any free port, -1 = none
};

class Server {
 public:
  // Listens (health NOT_SERVING until Load succeeds).
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServeOptions& options);
  ~Server();

  // Loads the model and starts serving; on error the server stays NOT_SERVING.
  absl::Status Load();
  // One line: where the layers went (after Load).
  std::string PlacementSummary() const;
  int port() const { return port_; }
  int metrics_port() const;  // -1 without metrics
  int http_port() const;     // -1 without the HTTP API
  // False after a device fault: the process should exit non-zero.
  bool healthy() const;
  // Health NOT_SERVING and new requests UNAVAILABLE at once; in-flight
  // requests get until `deadline` to finish, the rest end UNAVAILABLE; then
  // the listener closes.
  void Drain(absl::Time deadline);

  struct Engine;
  class Service;
  class Dispatcher;

 private:
  explicit Server(const ServeOptions& options);

  ServeOptions options_;
  std::unique_ptr<Dispatcher> dispatcher_;  // destroyed last: the calls' final updates go through it
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<HttpApi> http_;  // stopped first, destroyed after the engine: the runtime's last updates post to it
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace ferry::service
