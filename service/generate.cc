#include "service/generate.h"

#include <condition_variable>
#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "engine/status.h"
#include "engine/text/chat.h"

namespace ferry::service {
namespace {

// The prompt's text: as given, or the chat message rendered with the model's template.
absl::StatusOr<std::string> PromptText(const GenerateOptions& o, const engine::Engine& e) {
  if (o.chat.empty()) {
    if (!o.system.empty()) return absl::InvalidArgumentError("--system needs --chat");
    return o.prompt;
  }
  if (!o.prompt.empty()) return absl::InvalidArgumentError("--chat and --prompt are exclusive");
  const text::Tokenizer& tok = *e.tokenizer;
  absl::StatusOr<absl::string_view> source = e.model->file->GetString("tokenizer.chat_template");
  text::ChatTemplate tmpl;
  FERRY_ASSIGN_OR_RETURN(tmpl, text::ParseChatTemplate(source.ok() ? *source : absl::string_view(),
                                                       tok.bos() >= 0 ? tok.piece(tok.bos()) : "",
                                                       tok.eos() >= 0 ? tok.piece(tok.eos()) : ""));
  std::vector<text::ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({"system", o.system});
  messages.push_back({"user", o.chat});
  text::ChatOptions chat;
  chat.enable_thinking = o.enable_thinking;
  return text::RenderChat(tmpl, messages, chat);
}

}  // namespace

absl::StatusOr<GenerateStats> Generate(const GenerateOptions& o, std::FILE* out, std::FILE* log) {
  if (o.max_tokens < 0) return absl::InvalidArgumentError("-n must be >= 0");
  engine::EngineSpec spec;
  spec.model_path = o.model_path;
  spec.placement = o.placement;
  spec.runtime = o.runtime;
  spec.progress = o.progress;
  spec.runtime.slots = 1;
  spec.runtime.max_queue = 1;
  std::unique_ptr<engine::Engine> e;
  FERRY_ASSIGN_OR_RETURN(e, engine::OpenEngine(spec));
  std::fprintf(log, "%s\n", e->executor->PlacementSummary().c_str());
  std::string prompt;
  FERRY_ASSIGN_OR_RETURN(prompt, PromptText(o, *e));
  const int n_vocab = e->model->config.n_vocab;
  for (int32_t id : o.stop_ids) {
    if (id < 0 || id >= n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("stop token id ", id, " is outside the vocabulary [0, ", n_vocab, ")"));
    }
  }
  runtime::Request req;
  req.prompt = e->tokenizer->Encode(prompt, e->tokenizer->add_bos());
  if (req.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty and the model adds no BOS token");
  req.sampling = o.sampling;
  req.max_tokens = o.max_tokens;
  req.stops = o.stops;
  req.stop_ids = o.stop_ids;
  req.ignore_eos = o.ignore_eos;
  req.text_at_start = prompt.empty();
  const int prompt_tokens = static_cast<int>(req.prompt.size());

  // The runtime reports on its thread; this one prints.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<runtime::Update> updates;
  auto sink = [&](runtime::Update&& u) {
    std::lock_guard<std::mutex> lock(mu);
    updates.push_back(std::move(u));
    cv.notify_one();
  };
  FERRY_RETURN_IF_ERROR(e->runtime->Submit(std::move(req), sink).status());
  // Echo a text prompt so the output reads as one text; a chat prints the answer alone.
  std::fputs(o.prompt.c_str(), out);
  std::fflush(out);
  GenerateStats stats;
  stats.prompt_tokens = prompt_tokens;
  for (;;) {
    runtime::Update u;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return !updates.empty(); });
      u = std::move(updates.front());
      updates.pop_front();
    }
    std::fwrite(u.text.data(), 1, u.text.size(), out);  // the text may hold NUL bytes
    std::fflush(out);
    if (u.finish == runtime::FinishReason::kNone) continue;
    if (u.finish == runtime::FinishReason::kError) return u.error;
    std::fputs("\n", out);
    std::fflush(out);
    stats.generated_tokens = u.usage.completion_tokens;
    stats.prefill_seconds = u.timings.prefill_s;
    stats.decode_seconds = u.timings.decode_s;
    stats.finish_reason = runtime::FinishReasonName(u.finish);
    return stats;
  }
}

}  // namespace ferry::service
