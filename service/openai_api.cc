#include "service/openai_api.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ferry::service {
namespace {

using json = nlohmann::json;

// Strings ferry writes are valid UTF-8 already; `replace` keeps a stray
// byte from ever turning into an exception.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Reads the fields of one JSON object, naming the field in every refusal.
class Fields {
 public:
  Fields(const json& obj, std::string* param) : obj_(obj), param_(param) {}

  // The field, or null when absent or JSON null (OpenAI's SDKs send null for "unset").
  const json* Get(const char* name) const {
    auto it = obj_.find(name);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }

  absl::Status Bad(const std::string& field, const std::string& message) const {
    *param_ = field;
    return absl::InvalidArgumentError(message);
  }
  absl::Status WrongType(const std::string& field, const json& v, const char* want) const {
    return Bad(field, absl::StrCat("'", field, "' must be ", want, ", got ", v.type_name()));
  }

  absl::Status Number(const char* name, std::optional<float>* out) const {
    const json* v = Get(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) return WrongType(name, *v, "a number");
    return AsFloat(name, *v, out);
  }
  // A JSON number as the proto's float (beyond float's range the
  // conversion would be undefined).
  absl::Status AsFloat(const std::string& field, const json& v, std::optional<float>* out) const {
    const double d = v.get<double>();
    if (!(std::fabs(d) <= std::numeric_limits<float>::max())) {
      return Bad(field, absl::StrCat("'", field, "' = ", v.dump(), " is outside the range of a float"));
    }
    *out = static_cast<float>(d);
    return absl::OkStatus();
  }
  // An integer in [lo, hi] (the range of the proto field it fills); the
  // limits proper are PrepareRequest's, with gRPC's messages.
  absl::Status Integer(const char* name, int64_t lo, int64_t hi, std::optional<int64_t>* out) const {
    const json* v = Get(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number_integer()) return WrongType(name, *v, "an integer");
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi)) {
      return Bad(name, absl::StrCat("'", name, "' = ", v->get<uint64_t>(), " is outside [", lo, ", ", hi, "]"));
    }
    const int64_t x = v->get<int64_t>();
    if (x < lo || x > hi) return Bad(name, absl::StrCat("'", name, "' = ", x, " is outside [", lo, ", ", hi, "]"));
    *out = x;
    return absl::OkStatus();
  }
  absl::Status Bool(const char* name, std::optional<bool>* out) const {
    const json* v = Get(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return WrongType(name, *v, "a boolean");
    *out = v->get<bool>();
    return absl::OkStatus();
  }

 private:
  const json& obj_;
  std::string* param_;
};

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();

// Token ids as a list of integers (in int32 range; the vocabulary check is PrepareRequest's).
bool AsTokenList(const json& v, v1::TokenIds* out) {
  if (!v.is_array() || v.empty()) return false;
  for (const json& t : v) {
    if (!t.is_number_integer()) return false;
    // nlohmann-json reads a non-negative integer as unsigned.
    if (t.is_number_unsigned() ? t.get<uint64_t>() > static_cast<uint64_t>(kInt32Max)
                               : t.get<int64_t>() < kInt32Min || t.get<int64_t>() > kInt32Max) {
      return false;
    }
  }
  for (const json& t : v) out->add_ids(static_cast<int32_t>(t.get<int64_t>()));
  return true;
}

absl::Status ReadPrompt(const Fields& f, v1::GenerateRequest* r) {
  const json* p = f.Get("prompt");
  if (p == nullptr) return f.Bad("prompt", "'prompt' is required");
  if (p->is_string()) {
    r->set_text(p->get<std::string>());
    return absl::OkStatus();
  }
  if (!p->is_array()) return f.WrongType("prompt", *p, "a string, a list of token ids, or a list of one of these");
  if (p->empty()) return f.Bad("prompt", "'prompt' is an empty list");
  if (AsTokenList(*p, r->mutable_tokens())) return absl::OkStatus();
  r->clear_tokens();
  if (p->size() > 1) {
    return f.Bad("prompt", absl::StrCat("'prompt' holds ", p->size(),
                                        " prompts; ferry answers one prompt per request (send one request each)"));
  }
  const json& only = (*p)[0];
  if (only.is_string()) {
    r->set_text(only.get<std::string>());
    return absl::OkStatus();
  }
  if (AsTokenList(only, r->mutable_tokens())) return absl::OkStatus();
  r->clear_tokens();
  return f.Bad("prompt", "'prompt' must be a string, a list of token ids (32-bit integers), or a list of one of these");
}

absl::Status ReadMessages(const Fields& f, v1::GenerateRequest* r) {
  const json* m = f.Get("messages");
  if (m == nullptr) return f.Bad("messages", "'messages' is required");
  if (!m->is_array()) return f.WrongType("messages", *m, "a list of messages");
  v1::ChatPrompt* chat = r->mutable_chat();
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!msg.is_object()) return f.WrongType(where, msg, "an object");
    std::string param;
    Fields mf(msg, &param);
    const json* role = mf.Get("role");
    if (role == nullptr || !role->is_string()) return f.Bad(where + ".role", absl::StrCat(where, ".role must be a string"));
    std::string r_name = role->get<std::string>();
    // OpenAI's newer models call the system turn "developer".
    if (r_name == "developer") r_name = "system";
    if (const json* calls = mf.Get("tool_calls"); calls != nullptr && !(calls->is_array() && calls->empty())) {
      return f.Bad(where + ".tool_calls", "tool calls are not supported (ferry generates text only)");
    }
    std::string content;
    const json* c = mf.Get("content");
    if (c == nullptr) {
      if (r_name != "assistant") return f.Bad(where + ".content", absl::StrCat(where, ".content is required"));
    } else if (c->is_string()) {
      content = c->get<std::string>();
    } else if (c->is_array()) {
      // Text parts joined with new lines, as vLLM joins them.
      for (size_t k = 0; k < c->size(); ++k) {
        const json& part = (*c)[k];
        const std::string pw = absl::StrCat(where, ".content[", k, "]");
        if (!part.is_object()) return f.WrongType(pw, part, "an object");
        auto type = part.find("type");
        auto text = part.find("text");
        if (type == part.end() || !type->is_string() || *type != "text") {
          return f.Bad(pw + ".type", absl::StrCat(pw, ": only text parts are supported, got type ",
                                                  type != part.end() ? type->dump() : std::string("(none)")));
        }
        if (text == part.end() || !text->is_string()) return f.Bad(pw + ".text", absl::StrCat(pw, ".text must be a string"));
        if (k > 0) content += "\n";
        content += text->get<std::string>();
      }
    } else {
      return f.WrongType(where + ".content", *c, "a string or a list of text parts");
    }
    v1::ChatMessage* out = chat->add_messages();
    out->set_role(r_name);
    out->set_content(std::move(content));
  }
  // llama.cpp's and vLLM's extension: chat_template_kwargs.enable_thinking (qwen3).
  if (const json* kw = f.Get("chat_template_kwargs"); kw != nullptr) {
    if (!kw->is_object()) return f.WrongType("chat_template_kwargs", *kw, "an object");
    auto it = kw->find("enable_thinking");
    if (it != kw->end() && !it->is_null()) {
      if (!it->is_boolean()) return f.WrongType("chat_template_kwargs.enable_thinking", *it, "a boolean");
      chat->set_enable_thinking(it->get<bool>());
    }
  }
  return absl::OkStatus();
}

// Fields whose meaning ferry cannot honour: refused rather than ignored,
// since the answer would not be what the client asked for.
absl::Status RefuseUnsupported(const Fields& f, OpenAiEndpoint endpoint) {
  for (const char* name : {"n", "best_of"}) {
    if (const json* v = f.Get(name); v != nullptr && !(v->is_number_integer() && v->get<int64_t>() == 1)) {
      return f.Bad(name, absl::StrCat("'", name, "' = ", v->dump(), ": ferry returns one choice per request (", name,
                                      " = 1)"));
    }
  }
  for (const char* name : {"tools", "functions"}) {
    if (const json* v = f.Get(name); v != nullptr && !(v->is_array() && v->empty())) {
      return f.Bad(name, absl::StrCat("'", name, "': tool and function calling are not supported"));
    }
  }
  for (const char* name : {"tool_choice", "function_call"}) {
    if (const json* v = f.Get(name); v != nullptr && !(v->is_string() && (*v == "none" || *v == "auto"))) {
      return f.Bad(name, absl::StrCat("'", name, "': tool and function calling are not supported"));
    }
  }
  if (const json* v = f.Get("response_format"); v != nullptr) {
    auto type = v->is_object() ? v->find("type") : v->end();
    if (!v->is_object() || type == v->end() || *type != "text") {
      return f.Bad("response_format", "'response_format': only {\"type\": \"text\"} is supported (no JSON mode)");
    }
  }
  if (const json* v = f.Get("modalities"); v != nullptr) {
    if (!v->is_array()) return f.WrongType("modalities", *v, "a list");
    for (const json& m : *v) {
      if (m != "text") return f.Bad("modalities", "'modalities': ferry generates text only");
    }
  }
  if (f.Get("audio") != nullptr) return f.Bad("audio", "'audio': ferry generates text only");
  if (endpoint == OpenAiEndpoint::kCompletions) {
    if (const json* v = f.Get("suffix"); v != nullptr && !(v->is_string() && v->get<std::string>().empty())) {
      return f.Bad("suffix", "'suffix' (fill in the middle) is not supported");
    }
  }
  return absl::OkStatus();
}

json UsageJson(const runtime::Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

const char* FinishName(runtime::FinishReason r) {
  switch (r) {
    case runtime::FinishReason::kLength: return "length";
    case runtime::FinishReason::kStop:
    case runtime::FinishReason::kStopSequence: return "stop";
    default: return nullptr;  // errors end a request some other way
  }
}

json FinishJson(runtime::FinishReason r) {
  const char* name = FinishName(r);
  return name != nullptr ? json(name) : json(nullptr);
}

json BytesJson(const std::string& s) {
  json out = json::array();
  for (unsigned char c : s) out.push_back(static_cast<int>(c));
  return out;
}

// Chat: {"content": [{token, logprob, bytes, top_logprobs}]}; completions
// (the legacy shape): {tokens, token_logprobs, top_logprobs, text_offset}.
json LogprobsJson(const ReplyContext& ctx, const std::vector<text::Sampled>& tokens, size_t* offset) {
  const text::Tokenizer& tok = *ctx.tokenizer;
  if (ctx.endpoint == OpenAiEndpoint::kChat) {
    json content = json::array();
    for (const text::Sampled& t : tokens) {
      const std::string bytes = tok.TokenBytes(t.token);
      json top = json::array();
      for (const text::TokenLogprob& alt : t.top) {
        const std::string ab = tok.TokenBytes(alt.token);
        top.push_back({{"token", text::SanitizeUtf8(ab)}, {"logprob", alt.logprob}, {"bytes", BytesJson(ab)}});
      }
      content.push_back({{"token", text::SanitizeUtf8(bytes)},
                         {"logprob", t.logprob},
                         {"bytes", BytesJson(bytes)},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}, {"refusal", nullptr}};
  }
  json names = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const text::Sampled& t : tokens) {
    const std::string piece = text::SanitizeUtf8(tok.TokenBytes(t.token));
    names.push_back(piece);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const text::TokenLogprob& alt : t.top) top[text::SanitizeUtf8(tok.TokenBytes(alt.token))] = alt.logprob;
    tops.push_back(std::move(top));
    offsets.push_back(*offset);
    *offset += piece.size();
  }
  return {{"tokens", std::move(names)},
          {"token_logprobs", std::move(lps)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

json Envelope(const ReplyContext& ctx, const char* object) {
  return {{"id", ctx.id}, {"object", object}, {"created", ctx.created}, {"model", ctx.model}};
}

std::string Event(const json& j) { return absl::StrCat("data: ", Dump(j), "\n\n"); }

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, const std::string& body,
                                                 std::string* param) {
  param->clear();
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("the body is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat("the body must be a JSON object, got ", j.type_name()));
  Fields f(j, param);
  OpenAiRequest out;
  out.endpoint = endpoint;
  v1::GenerateRequest& r = out.request;
  if (absl::Status s = RefuseUnsupported(f, endpoint); !s.ok()) return s;
  if (const json* m = f.Get("model"); m != nullptr && !m->is_string()) return f.WrongType("model", *m, "a string");

  if (endpoint == OpenAiEndpoint::kCompletions) {
    if (absl::Status s = ReadPrompt(f, &r); !s.ok()) return s;
  } else {
    if (absl::Status s = ReadMessages(f, &r); !s.ok()) return s;
  }

  // Length: max_completion_tokens is the newer name of max_tokens.
  std::optional<int64_t> max_tokens, max_completion_tokens;
  if (absl::Status s = f.Integer("max_tokens", kInt32Min, kInt32Max, &max_tokens); !s.ok()) return s;
  if (absl::Status s = f.Integer("max_completion_tokens", kInt32Min, kInt32Max, &max_completion_tokens); !s.ok()) return s;
  if (max_completion_tokens) max_tokens = max_completion_tokens;
  if (max_tokens) {
    r.set_max_tokens(static_cast<int32_t>(*max_tokens));
    out.max_tokens_set = true;
  }

  // Sampling.
  v1::SamplingParams* sp = r.mutable_sampling();
  struct FloatField {
    const char* name;
    void (v1::SamplingParams::*set)(float);
  };
  for (const FloatField& ff : {FloatField{"temperature", &v1::SamplingParams::set_temperature},
                               FloatField{"top_p", &v1::SamplingParams::set_top_p},
                               FloatField{"min_p", &v1::SamplingParams::set_min_p},
                               FloatField{"typical_p", &v1::SamplingParams::set_typical_p},
                               FloatField{"repetition_penalty", &v1::SamplingParams::set_repetition_penalty},
                               FloatField{"presence_penalty", &v1::SamplingParams::set_presence_penalty},
                               FloatField{"frequency_penalty", &v1::SamplingParams::set_frequency_penalty}}) {
    std::optional<float> v;
    if (absl::Status s = f.Number(ff.name, &v); !s.ok()) return s;
    if (v) (sp->*ff.set)(*v);
  }
  std::optional<int64_t> top_k, seed;
  if (absl::Status s = f.Integer("top_k", kInt32Min, kInt32Max, &top_k); !s.ok()) return s;
  if (top_k) sp->set_top_k(static_cast<int32_t>(*top_k));
  if (const json* v = f.Get("seed"); v != nullptr) {
    if (!v->is_number_integer()) return f.WrongType("seed", *v, "an integer");
    if (!v->is_number_unsigned() && v->get<int64_t>() < 0) return f.Bad("seed", absl::StrCat("'seed' = ", v->dump(), " is negative"));
    r.set_seed(v->get<uint64_t>());
  }
  if (const json* v = f.Get("logit_bias"); v != nullptr) {
    if (!v->is_object()) return f.WrongType("logit_bias", *v, "an object of token id -> bias");
    for (auto it = v->begin(); it != v->end(); ++it) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(it.key(), &id)) {
        return f.Bad("logit_bias", absl::StrCat("logit_bias key '", it.key(), "' is not a token id"));
      }
      if (!it->is_number()) return f.WrongType(absl::StrCat("logit_bias.", it.key()), *it, "a number");
      std::optional<float> bias;
      if (absl::Status s = f.AsFloat(absl::StrCat("logit_bias.", it.key()), *it, &bias); !s.ok()) return s;
      (*sp->mutable_logit_bias())[id] = *bias;
    }
  }

  // Stops.
  if (const json* v = f.Get("stop"); v != nullptr) {
    if (v->is_string()) {
      r.add_stop(v->get<std::string>());
    } else if (v->is_array()) {
      for (const json& s : *v) {
        if (!s.is_string()) return f.WrongType("stop", s, "a string or a list of strings");
        r.add_stop(s.get<std::string>());
      }
    } else {
      return f.WrongType("stop", *v, "a string or a list of strings");
    }
  }
  // OpenAI's cache hint is ferry's session: requests with the same key may
  // reuse the KV cache of their common prompt prefix (never across keys).
  if (const json* v = f.Get("prompt_cache_key"); v != nullptr) {
    if (!v->is_string()) return f.WrongType("prompt_cache_key", *v, "a string");
    r.set_session_id(v->get<std::string>());
  }
  std::optional<bool> ignore_eos, stream, echo;
  if (absl::Status s = f.Bool("ignore_eos", &ignore_eos); !s.ok()) return s;
  if (ignore_eos) r.set_ignore_eos(*ignore_eos);

  // Log-probabilities: the legacy completions take a count of alternatives;
  // chat takes logprobs = true and top_logprobs = N.
  if (endpoint == OpenAiEndpoint::kCompletions) {
    std::optional<int64_t> lp;
    if (absl::Status s = f.Integer("logprobs", kInt32Min, kInt32Max, &lp); !s.ok()) return s;
    if (lp) {
      r.set_logprobs(true);
      r.set_top_logprobs(static_cast<int32_t>(*lp));
    }
    if (absl::Status s = f.Bool("echo", &echo); !s.ok()) return s;
    out.echo = echo.value_or(false);
    if (out.echo && lp) return f.Bad("echo", "'echo' with 'logprobs' is not supported (no log-probabilities of the prompt)");
  } else {
    std::optional<bool> lp;
    std::optional<int64_t> top;
    if (absl::Status s = f.Bool("logprobs", &lp); !s.ok()) return s;
    if (absl::Status s = f.Integer("top_logprobs", kInt32Min, kInt32Max, &top); !s.ok()) return s;
    if (lp) r.set_logprobs(*lp);
    if (top) r.set_top_logprobs(static_cast<int32_t>(*top));
  }
  out.top_logprobs = r.top_logprobs();

  if (absl::Status s = f.Bool("stream", &stream); !s.ok()) return s;
  out.stream = stream.value_or(false);
  if (const json* so = f.Get("stream_options"); so != nullptr) {
    if (!so->is_object()) return f.WrongType("stream_options", *so, "an object");
    auto it = so->find("include_usage");
    if (it != so->end() && !it->is_null()) {
      if (!it->is_boolean()) return f.WrongType("stream_options.include_usage", *it, "a boolean");
      out.include_usage = it->get<bool>();
    }
  }
  return out;
}

std::string OpenAiErrorJson(const std::string& message, const std::string& type, const std::string& param,
                            const std::string& code) {
  return Dump({{"error",
                {{"message", message},
                 {"type", type},
                 {"param", param.empty() ? json(nullptr) : json(param)},
                 {"code", code.empty() ? json(nullptr) : json(code)}}}});
}

void CompletionBuilder::Add(const runtime::Update& u) {
  text_ += u.text;
  if (ctx_.logprobs) tokens_.insert(tokens_.end(), u.tokens.begin(), u.tokens.end());
}

std::string CompletionBuilder::Json(const runtime::Update& last) const {
  const bool chat = ctx_.endpoint == OpenAiEndpoint::kChat;
  json j = Envelope(ctx_, chat ? "chat.completion" : "text_completion");
  json choice = {{"index", 0}, {"finish_reason", FinishJson(last.finish)}};
  size_t offset = 0;
  choice["logprobs"] = ctx_.logprobs ? LogprobsJson(ctx_, tokens_, &offset) : json(nullptr);
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text_}};
  } else {
    choice["text"] = text_;
  }
  j["choices"] = json::array({std::move(choice)});
  j["usage"] = UsageJson(last.usage);
  return Dump(j);
}

std::string ChunkEvent(const ReplyContext& ctx, const runtime::Update& u, bool include_usage) {
  const bool chat = ctx.endpoint == OpenAiEndpoint::kChat;
  json j = Envelope(ctx, chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", 0}, {"finish_reason", FinishJson(u.finish)}};
  size_t offset = 0;
  choice["logprobs"] = ctx.logprobs ? LogprobsJson(ctx, u.tokens, &offset) : json(nullptr);
  if (chat) {
    choice["delta"] = u.text.empty() ? json::object() : json{{"content", u.text}};
  } else {
    choice["text"] = u.text;
  }
  j["choices"] = json::array({std::move(choice)});
  if (include_usage) j["usage"] = nullptr;  // only the last chunk carries it, as OpenAI sends it
  return Event(j);
}

std::string ChatRoleEvent(const ReplyContext& ctx, bool include_usage) {
  json j = Envelope(ctx, "chat.completion.chunk");
  j["choices"] = json::array(
      {{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
  if (include_usage) j["usage"] = nullptr;
  return Event(j);
}

std::string EchoEvent(const ReplyContext& ctx, const std::string& prompt_text, bool include_usage) {
  json j = Envelope(ctx, "text_completion");
  j["choices"] = json::array({{{"index", 0}, {"text", prompt_text}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
  if (include_usage) j["usage"] = nullptr;
  return Event(j);
}

std::string UsageEvent(const ReplyContext& ctx, const runtime::Usage& usage) {
  json j = Envelope(ctx, ctx.endpoint == OpenAiEndpoint::kChat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = UsageJson(usage);
  return Event(j);
}

std::string ErrorEvent(const std::string& message, const std::string& type, const std::string& code) {
  return absl::StrCat("data: ", OpenAiErrorJson(message, type, "", code), "\n\n");
}

namespace {
json ModelObject(const std::string& id, int64_t created, int context) {
  // context_length as LM Studio and OpenRouter name it, max_model_len as vLLM does.
  return {{"id", id},           {"object", "model"},          {"created", created},
          {"owned_by", "ferry"}, {"context_length", context}, {"max_model_len", context}};
}
}  // namespace

std::string ModelJson(const std::string& id, int64_t created, int context) {
  return Dump(ModelObject(id, created, context));
}

std::string ModelsJson(const std::string& id, int64_t created, int context) {
  return Dump({{"object", "list"}, {"data", json::array({ModelObject(id, created, context)})}});
}

}  // namespace ferry::service
