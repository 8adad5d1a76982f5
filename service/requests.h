// A GenerateRequest turned into the runtime's request, every field checked
// against the model and the server's limits before any work. Errors are
// INVALID_ARGUMENT (FAILED_PRECONDITION for a chat prompt on a model whose
// template ferry cannot render) and say what was wrong and the limit.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/runtime/runtime.h"
#include "engine/text/chat.h"
#include "engine/text/tokenizer.h"
#include "ferry/v1/inference.pb.h"
#include "service/limits.h"

namespace ferry::service {

struct RequestContext {
  const text::Tokenizer* tokenizer = nullptr;
  int n_ctx = 0;                                // positions per request
  absl::StatusOr<text::ChatTemplate> chat = absl::FailedPreconditionError("no chat template");
  ServeLimits limits;
  size_t max_token_bytes = 1;                   // MaxTokenBytes(*tokenizer), computed once at load
};

struct PreparedRequest {
  runtime::Request request;
  std::string prompt_text;  // for echo: the text the prompt tokens stand for
  bool logprobs = false;
};

// The longest prompt accepted, in tokens: --max_prompt_tokens, at most the context.
int PromptTokenLimit(const RequestContext& ctx);

// The most input bytes one token can stand for: the longest vocabulary
// piece (at least 1). Neither encoder shrinks its input: SentencePiece
// turns ' ' into U+2581 (1 byte into 3) and matches pieces against that, so
// a piece covers at most its own length of input; byte-level BPE pieces are
// the input's bytes as stand-in characters of 1 or 2 bytes each; a special
// token is matched verbatim; byte fallback and unknown bytes are one token
// per input byte; invalid UTF-8 becomes U+FFFD (1 byte into 3).
size_t MaxTokenBytes(const text::Tokenizer& tokenizer);

// Bytes of text past which no prompt fits PromptTokenLimit tokens:
// PromptTokenLimit x max_token_bytes. Longer text is refused before it is
// tokenized (tokenizing costs time in its length on a server thread),
// and this never refuses a text that would have fitted.
size_t PromptTextByteLimit(const RequestContext& ctx);

// `cancelled` is asked after the prompt is tokenized (the longest step):
// a call the client gave up on is not queued.
absl::StatusOr<PreparedRequest> PrepareRequest(const v1::GenerateRequest& in, const RequestContext& ctx,
                                               uint64_t random_seed, const std::function<bool()>& cancelled = {});

// The Tokenize RPC under the same text limit.
absl::Status TokenizeText(const v1::TokenizeRequest& in, const RequestContext& ctx, v1::TokenizeResponse* out,
                          const std::function<bool()>& cancelled = {});

}  // namespace ferry::service
