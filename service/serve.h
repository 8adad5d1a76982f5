// `ferry serve`: starts the gRPC server, loads the model, serves until
// SIGTERM or SIGINT, then drains.
#pragma once

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "service/server.h"

namespace ferry::service {

// Returns the process exit code: 0 after a drain, 1 when the model failed to
// load (the reason printed), 3 after a device fault left the engine unusable.
int Serve(const ServeOptions& options, absl::Duration drain);

}  // namespace ferry::service
