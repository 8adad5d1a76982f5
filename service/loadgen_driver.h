// What `ferry loadgen`'s workers call: one request to the end, timed. The
// drivers (gRPC and --direct in loadgen.cc, --http in loadgen_http.cc) are
// interchangeable.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "service/loadgen.h"

namespace ferry::service {

using Clock = std::chrono::steady_clock;

// One request's outcome: when its tokens arrived, and the status.
struct Outcome {
  std::string code = "OK";
  Clock::time_point start;
  std::vector<Clock::time_point> arrivals;  // one per generated token (--http: per event)
  int tokens = -1;                          // generated tokens when not arrivals.size() (--http: the usage)
  bool cancelled = false;                   // loadgen cancelled it
  bool malformed = false;                   // loadgen sent it malformed
};

// What a request of the mix does, drawn per request (gRPC only).
struct Mix {
  int cancel_after = -1;  // tokens before loadgen cancels; -1 = never
  int malformed = -1;     // which malformation; -1 = none
  int session = -1;
};

// A source of requests for the workers: gRPC or HTTP to a server, or a
// runtime in this process.
class Driver {
 public:
  virtual ~Driver() = default;
  virtual Outcome Run(int worker, const Mix& plan) = 0;
};

// The OpenAI-compatible API: each worker keeps one HTTP/1.1 connection.
std::unique_ptr<Driver> MakeHttpDriver(const LoadgenOptions& options);

}  // namespace ferry::service
