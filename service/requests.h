// A GenerateRequest turned into the runtime's request, every field checked
// against the model and the server's limits before any work. Errors are
// INVALID_ARGUMENT (FAILED_PRECONDITION for a chat prompt on a model whose
// template ferry cannot render) and say what was wrong and the limit.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/runtime/runtime.h"
#include "engine/text/chat.h"
#include "engine/text/tokenizer.h"
#include "ferry/v1/inference.pb.h"
#include "service/server.h"

namespace ferry::service {

struct RequestContext {
  const text::Tokenizer* tokenizer = nullptr;
  int n_ctx = 0;                                // positions per request
  absl::StatusOr<text::ChatTemplate> chat = absl::FailedPreconditionError("no chat template");
  ServeLimits limits;
};

struct PreparedRequest {
  runtime::Request request;
  std::string prompt_text;  // for echo: the text the prompt tokens stand for
  bool logprobs = false;
};

absl::StatusOr<PreparedRequest> PrepareRequest(const v1::GenerateRequest& in, const RequestContext& ctx,
                                               uint64_t random_seed);

}  // namespace ferry::service
