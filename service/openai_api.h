// OpenAI's completion and chat completion requests as ferry's own
// GenerateRequest, and the runtime's updates as OpenAI's JSON (whole
// responses and server-sent-event chunks). The HTTP front end (http_api.cc)
// moves bytes; this file owns what the fields mean. A request becomes a
// v1::GenerateRequest and goes through the same PrepareRequest as gRPC, so
// both APIs enforce the same limits with the same messages.
//
// Accepted: model (any name; the loaded model answers), prompt (a string,
// one string in a list, token ids, or one list of token ids), messages
// (system/developer/user/assistant; content a string or text parts),
// max_tokens / max_completion_tokens, temperature, top_p, top_k, min_p,
// typical_p, repetition_penalty, presence_penalty, frequency_penalty, seed,
// stop (a string or a list), logit_bias, logprobs / top_logprobs, n = 1,
// best_of = 1, echo (completions, without logprobs), stream,
// stream_options.include_usage, ignore_eos, chat_template_kwargs.
// enable_thinking, prompt_cache_key (ferry's session_id); user and any
// field ferry does not know are ignored.
// Refused (400, naming the field): n or best_of other than 1, suffix,
// tools / functions / tool_choice, response_format other than text,
// non-text content parts or modalities, audio, echo with logprobs, more than
// one prompt.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/runtime/runtime.h"
#include "engine/text/tokenizer.h"
#include "ferry/v1/inference.pb.h"

namespace ferry::service {

enum class OpenAiEndpoint { kCompletions, kChat };

// A request body read into ferry's request, with what the reply needs.
struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  v1::GenerateRequest request;
  bool stream = false;
  bool include_usage = false;   // stream_options.include_usage
  bool max_tokens_set = false;  // else: as many as the context leaves (OpenAI's chat default)
  bool echo = false;            // completions: the prompt's text before the completion
  int top_logprobs = 0;
};

// Why a body is refused: the message and OpenAI's `param` (empty = null).
struct OpenAiError {
  std::string message;
  std::string param;
};

// Parses and checks the JSON body; INVALID_ARGUMENT with the message (and
// the field in `param`) when it is malformed or asks for what ferry refuses.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, const std::string& body,
                                                 std::string* param);

// OpenAI's error body: {"error": {"message", "type", "param", "code"}}.
std::string OpenAiErrorJson(const std::string& message, const std::string& type, const std::string& param,
                            const std::string& code);

// What the reply builders need of a request.
struct ReplyContext {
  OpenAiEndpoint endpoint;
  std::string id;       // cmpl-... or chatcmpl-...
  std::string model;    // the served model's id
  int64_t created = 0;  // unix seconds
  bool logprobs = false;
  const text::Tokenizer* tokenizer = nullptr;
};

// Accumulates a non-streamed request's updates, then the whole response.
class CompletionBuilder {
 public:
  explicit CompletionBuilder(const ReplyContext& ctx) : ctx_(ctx) {}
  void Add(const runtime::Update& u);
  void AddEcho(const std::string& prompt_text) { text_ = prompt_text + text_; }
  std::string Json(const runtime::Update& last) const;

 private:
  ReplyContext ctx_;
  std::string text_;
  std::vector<text::Sampled> tokens_;
};

// One server-sent event ("data: ...\n\n") per call.
std::string ChunkEvent(const ReplyContext& ctx, const runtime::Update& u, bool include_usage);
std::string ChatRoleEvent(const ReplyContext& ctx, bool include_usage);  // the assistant role, first
std::string EchoEvent(const ReplyContext& ctx, const std::string& prompt_text, bool include_usage);
std::string UsageEvent(const ReplyContext& ctx, const runtime::Usage& usage);
std::string ErrorEvent(const std::string& message, const std::string& type, const std::string& code);
inline constexpr char kDoneEvent[] = "data: [DONE]\n\n";

// /v1/models and /v1/models/{id}.
std::string ModelJson(const std::string& id, int64_t created, int context);
std::string ModelsJson(const std::string& id, int64_t created, int context);

}  // namespace ferry::service
