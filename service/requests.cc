#include "service/requests.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"

namespace ferry::service {
namespace {

absl::Status Utf8(const std::string& s, absl::string_view field) {
  if (text::CompleteUtf8Prefix(s) == s.size() && text::SanitizeUtf8(s) == s) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " is not valid UTF-8"));
}

absl::Status Finite(float v, absl::string_view field) {
  if (std::isfinite(v)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " = ", v, " is not a finite number"));
}

// Text that cannot fit the prompt limit, refused before it is tokenized.
absl::Status TextFits(size_t bytes, absl::string_view what, const RequestContext& ctx) {
  const size_t limit = PromptTextByteLimit(ctx);
  if (bytes <= limit) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, " has ", bytes, " bytes; at most ", limit, " bytes fit in ",
                                                 PromptTokenLimit(ctx), " tokens (", ctx.max_token_bytes,
                                                 " bytes in the longest token)"));
}

absl::Status Cancelled(const std::function<bool()>& cancelled) {
  if (cancelled && cancelled()) return absl::CancelledError("the client cancelled the call");
  return absl::OkStatus();
}

}  // namespace

int PromptTokenLimit(const RequestContext& ctx) {
  return ctx.limits.max_prompt_tokens > 0 ? std::min(ctx.limits.max_prompt_tokens, ctx.n_ctx) : ctx.n_ctx;
}

size_t MaxTokenBytes(const text::Tokenizer& tok) {
  size_t most = 1;
  for (int id = 0; id < tok.n_vocab(); ++id) most = std::max(most, tok.piece(id).size());
  return most;
}

size_t PromptTextByteLimit(const RequestContext& ctx) {
  return static_cast<size_t>(std::max(PromptTokenLimit(ctx), 0)) * std::max<size_t>(ctx.max_token_bytes, 1);
}

absl::Status TokenizeText(const v1::TokenizeRequest& in, const RequestContext& ctx, v1::TokenizeResponse* out,
                          const std::function<bool()>& cancelled) {
  const text::Tokenizer& tok = *ctx.tokenizer;
  if (absl::Status s = TextFits(in.text().size(), "text", ctx); !s.ok()) return s;
  if (absl::Status s = Utf8(in.text(), "text"); !s.ok()) return s;
  const std::vector<int32_t> ids = tok.Encode(in.text(), in.has_add_bos() ? in.add_bos() : tok.add_bos());
  if (absl::Status s = Cancelled(cancelled); !s.ok()) return s;
  for (int32_t id : ids) {
    out->add_ids(id);
    out->add_pieces(text::SanitizeUtf8(tok.TokenBytes(id)));
  }
  return absl::OkStatus();
}

absl::StatusOr<PreparedRequest> PrepareRequest(const v1::GenerateRequest& in, const RequestContext& ctx,
                                               uint64_t random_seed, const std::function<bool()>& cancelled) {
  const text::Tokenizer& tok = *ctx.tokenizer;
  const int n_vocab = tok.n_vocab();
  const int prompt_limit = PromptTokenLimit(ctx);
  PreparedRequest out;
  runtime::Request& r = out.request;

  // Every field but the prompt first: a malformed request costs no tokenizing.
  const int output_limit = ctx.limits.max_output_tokens > 0 ? ctx.limits.max_output_tokens : ctx.n_ctx;
  r.max_tokens = in.has_max_tokens() ? in.max_tokens() : std::min(128, output_limit);
  if (r.max_tokens < 0 || r.max_tokens > output_limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens = ", r.max_tokens, " is outside [0, ", output_limit, "]"));
  }
  if (in.stop_size() > ctx.limits.max_stops) {
    return absl::InvalidArgumentError(
        absl::StrCat(in.stop_size(), " stop sequences; the limit is ", ctx.limits.max_stops));
  }
  for (int i = 0; i < in.stop_size(); ++i) {
    const std::string& s = in.stop(i);
    if (s.empty()) return absl::InvalidArgumentError(absl::StrCat("stop sequence ", i, " is empty"));
    if (static_cast<int>(s.size()) > ctx.limits.max_stop_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("stop sequence ", i, " has ", s.size(), " bytes; the limit is ",
                                                     ctx.limits.max_stop_bytes));
    }
    if (absl::Status st = Utf8(s, absl::StrCat("stop sequence ", i)); !st.ok()) return st;
    r.stops.push_back(s);
  }
  if (in.stop_token_ids_size() > ctx.limits.max_stop_token_ids) {
    return absl::InvalidArgumentError(absl::StrCat(in.stop_token_ids_size(), " stop token ids; the limit is ",
                                                   ctx.limits.max_stop_token_ids));
  }
  for (int i = 0; i < in.stop_token_ids_size(); ++i) {
    const int32_t id = in.stop_token_ids(i);
    if (id < 0 || id >= n_vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop_token_ids ", i, " = ", id, " is outside the vocabulary [0, ", n_vocab, ")"));
    }
    r.stop_ids.push_back(id);
  }
  r.ignore_eos = in.ignore_eos();

  // Sampling: unset fields take ferry generate's defaults.
  text::SamplingParams& p = r.sampling;
  const v1::SamplingParams& sp = in.sampling();
  if (sp.has_temperature()) p.temperature = sp.temperature();
  if (sp.has_top_k()) p.top_k = sp.top_k();
  if (sp.has_top_p()) p.top_p = sp.top_p();
  if (sp.has_min_p()) p.min_p = sp.min_p();
  if (sp.has_typical_p()) p.typical_p = sp.typical_p();
  if (sp.has_repetition_penalty()) p.repetition_penalty = sp.repetition_penalty();
  if (sp.has_presence_penalty()) p.presence_penalty = sp.presence_penalty();
  if (sp.has_frequency_penalty()) p.frequency_penalty = sp.frequency_penalty();
  if (sp.has_penalty_last_n()) p.penalty_last_n = sp.penalty_last_n();
  for (absl::Status s : {Finite(p.temperature, "temperature"), Finite(p.top_p, "top_p"), Finite(p.min_p, "min_p"),
                         Finite(p.typical_p, "typical_p"), Finite(p.repetition_penalty, "repetition_penalty"),
                         Finite(p.presence_penalty, "presence_penalty"),
                         Finite(p.frequency_penalty, "frequency_penalty")}) {
    if (!s.ok()) return s;
  }
  if (sp.logit_bias_size() > n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat("logit_bias has ", sp.logit_bias_size(), " entries; the vocabulary ",
                                                   n_vocab));
  }
  for (const auto& [token, bias] : sp.logit_bias()) p.logit_bias.emplace_back(token, bias);
  std::sort(p.logit_bias.begin(), p.logit_bias.end());  // map order is unspecified; sampling must not depend on it
  if (in.top_logprobs() != 0 && !in.logprobs()) {
    return absl::InvalidArgumentError("top_logprobs needs logprobs = true");
  }
  p.top_logprobs = in.top_logprobs();
  p.seed = in.has_seed() ? in.seed() : random_seed;
  if (absl::Status s = text::Validate(p, n_vocab); !s.ok()) return s;
  out.logprobs = in.logprobs();
  r.logprobs = in.logprobs();

  if (in.session_id().size() > static_cast<size_t>(ctx.limits.max_session_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("session_id has ", in.session_id().size(), " bytes; the limit is ",
                                                   ctx.limits.max_session_bytes));
  }
  r.session = in.session_id();

  // The prompt, the one step whose cost grows with the request.
  switch (in.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (in.text().empty()) return absl::InvalidArgumentError("prompt text is empty");
      if (absl::Status s = TextFits(in.text().size(), "prompt text", ctx); !s.ok()) return s;
      if (absl::Status s = Utf8(in.text(), "prompt text"); !s.ok()) return s;
      r.prompt = tok.Encode(in.text(), tok.add_bos());
      out.prompt_text = in.text();
      r.text_at_start = false;
      break;
    }
    case v1::GenerateRequest::kTokens: {
      if (in.tokens().ids().empty()) return absl::InvalidArgumentError("prompt tokens are empty");
      if (in.tokens().ids_size() > prompt_limit) {
        return absl::InvalidArgumentError(
            absl::StrCat("the prompt has ", in.tokens().ids_size(), " tokens; the limit is ", prompt_limit));
      }
      for (int i = 0; i < in.tokens().ids_size(); ++i) {
        const int32_t id = in.tokens().ids(i);
        if (id < 0 || id >= n_vocab) {
          return absl::InvalidArgumentError(
              absl::StrCat("prompt token ", i, " = ", id, " is outside the vocabulary [0, ", n_vocab, ")"));
        }
      }
      r.prompt.assign(in.tokens().ids().begin(), in.tokens().ids().end());
      out.prompt_text = tok.Decode(r.prompt);
      // Only BOS (or nothing) before the generated text: it starts the text.
      r.text_at_start = out.prompt_text.empty();
      break;
    }
    case v1::GenerateRequest::kChat: {
      if (!ctx.chat.ok()) return ctx.chat.status();
      if (in.chat().messages().empty()) return absl::InvalidArgumentError("chat prompt has no messages");
      size_t content_bytes = 0;
      for (const v1::ChatMessage& m : in.chat().messages()) content_bytes += m.content().size();
      if (absl::Status s = TextFits(content_bytes, "the chat messages' content", ctx); !s.ok()) return s;
      std::vector<text::ChatMessage> messages;
      for (int i = 0; i < in.chat().messages_size(); ++i) {
        const v1::ChatMessage& m = in.chat().messages(i);
        if (absl::Status s = Utf8(m.content(), absl::StrCat("chat message ", i, " content")); !s.ok()) return s;
        messages.push_back({m.role(), m.content()});
      }
      text::ChatOptions options;
      options.add_generation_prompt = !in.chat().has_add_generation_prompt() || in.chat().add_generation_prompt();
      options.enable_thinking = !in.chat().has_enable_thinking() || in.chat().enable_thinking();
      absl::StatusOr<std::string> text = text::RenderChat(*ctx.chat, messages, options);
      if (!text.ok()) return text.status();
      if (absl::Status s = TextFits(text->size(), "the rendered chat prompt", ctx); !s.ok()) return s;
      r.prompt = tok.Encode(*text, tok.add_bos());
      out.prompt_text = *text;
      r.text_at_start = true;
      break;
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return absl::InvalidArgumentError("prompt is empty: set text, tokens or chat");
  }
  if (absl::Status s = Cancelled(cancelled); !s.ok()) return s;
  if (r.prompt.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");
  if (static_cast<int64_t>(r.prompt.size()) > prompt_limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt has ", r.prompt.size(), " tokens; the limit is ", prompt_limit));
  }

  if (static_cast<int64_t>(r.prompt.size()) + r.max_tokens > ctx.n_ctx) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", r.prompt.size(), " tokens) + max_tokens (", r.max_tokens,
                                                   ") exceeds the context of ", ctx.n_ctx, " tokens per request"));
  }
  return out;
}

}  // namespace ferry::service
