// Rendering a chat in a recognised template's format (chat_template.cc
// recognises it). Each family's function follows its published template
// step by step; the comments name the template expression each step mirrors.
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/text/chat.h"

namespace ferry::text {
namespace {

// The code point at s[i] and its length in bytes; an invalid byte is
// returned as itself with length 1 (it is never whitespace).
uint32_t CodePoint(absl::string_view s, size_t i, size_t* len) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > s.size()) n = 1;
  uint32_t cp = n == 1 ? c : c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) {
      *len = 1;
      return c;
    }
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  *len = n;
  return cp;
}

// Python's str.isspace(), which str.strip() and Jinja's trim filter use.
bool IsPythonSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// str.strip() (Jinja's |trim), str.lstrip('\n'), str.rstrip('\n'), str.strip('\n').
absl::string_view PyStrip(absl::string_view s) {
  size_t len = 0;
  while (!s.empty() && IsPythonSpace(CodePoint(s, 0, &len))) s.remove_prefix(len);
  while (!s.empty()) {  // the last code point: back over continuation bytes to its lead byte
    size_t start = s.size() - 1;
    while (start > 0 && s.size() - start < 4 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    const uint32_t cp = CodePoint(s, start, &len);
    if (start + len != s.size() || !IsPythonSpace(cp)) break;
    s.remove_suffix(len);
  }
  return s;
}
absl::string_view LstripNewlines(absl::string_view s) {
  while (!s.empty() && s.front() == '\n') s.remove_prefix(1);
  return s;
}
absl::string_view RstripNewlines(absl::string_view s) {
  while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}

absl::Status Invalid(size_t i, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("chat message ", i, ": ", why));
}

// The formats whose templates take an optional system message first and then
// raise unless turns alternate user, assistant, user, ... .
struct Turns {
  bool has_system = false;
  absl::string_view system;
  std::vector<const ChatMessage*> turns;
};
absl::StatusOr<Turns> Alternating(std::span<const ChatMessage> messages, const ChatTemplate& t, bool system_allowed) {
  Turns out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "system") {
      // Later system messages would be dropped or sent as a "system" turn the
      // model never saw in training: refused.
      const char* family = ChatFamilyName(t.family);
      if (i != 0) return Invalid(i, absl::StrCat("a system message may only come first in the ", family, " format"));
      if (!system_allowed) return Invalid(i, absl::StrCat("the ", family, " template has no system role"));
      out.has_system = true;
      out.system = m.content;
      continue;
    }
    const bool user_turn = out.turns.size() % 2 == 0;
    if (m.role != (user_turn ? "user" : "assistant")) {
      return Invalid(i, absl::StrCat("the ", ChatFamilyName(t.family), " template needs turns alternating ",
                                     "user/assistant starting with user; expected ", user_turn ? "user" : "assistant",
                                     ", got '", m.role, "'"));
    }
    out.turns.push_back(&m);
  }
  if (out.turns.empty()) return absl::InvalidArgumentError("the chat has no user message");
  return out;
}

std::string Chatml(const ChatTemplate& t, std::span<const ChatMessage> messages, const ChatOptions& o) {
  std::string out;
  // {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n...<|im_end|>\n' }}
  if (!t.default_system.empty() && messages[0].role != "system") {
    absl::StrAppend(&out, "<|im_start|>system\n", t.default_system, "<|im_end|>\n");
  }
  for (const ChatMessage& m : messages) absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
  if (o.add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::string Qwen3(std::span<const ChatMessage> messages, const ChatOptions& o) {
  // ns.last_query_index: the last user message that is not a wrapped tool
  // response (messages|length - 1 when there is none).
  size_t last_query = messages.size() - 1;
  for (size_t i = messages.size(); i-- > 0;) {
    const std::string& c = messages[i].content;
    if (messages[i].role == "user" && !(absl::StartsWith(c, "<tool_response>") && absl::EndsWith(c, "</tool_response>"))) {
      last_query = i;
      break;
    }
  }
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "assistant") {  // system first or later, user: a plain chatml turn
      absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      continue;
    }
    // content.split('</think>')[-1].lstrip('\n'), and the reasoning:
    // content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n').
    absl::string_view content = m.content, reasoning;
    if (size_t close = content.find("</think>"); close != absl::string_view::npos) {
      absl::string_view before = RstripNewlines(content.substr(0, close));
      if (size_t open = before.rfind("<think>"); open != absl::string_view::npos) before.remove_prefix(open + 7);
      reasoning = LstripNewlines(before);
      content = LstripNewlines(content.substr(content.rfind("</think>") + 8));
    }
    // Answers after the last question keep their reasoning (the last one
    // always gets a think block); earlier answers lose it.
    if (i > last_query && (i + 1 == messages.size() || !reasoning.empty())) {
      absl::StrAppend(&out, "<|im_start|>assistant\n<think>\n", RstripNewlines(LstripNewlines(reasoning)), "\n</think>\n\n",
                      LstripNewlines(content), "<|im_end|>\n");
    } else {
      absl::StrAppend(&out, "<|im_start|>assistant\n", content, "<|im_end|>\n");
    }
  }
  if (o.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (!o.enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

std::string Llama3Turns(std::span<const ChatMessage> messages, const ChatOptions& o) {
  std::string out;
  for (const ChatMessage& m : messages) {
    absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n", PyStrip(m.content), "<|eot_id|>");
  }
  if (o.add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string Llama31(const ChatTemplate& t, std::span<const ChatMessage> messages, const ChatOptions& o) {
  absl::string_view system;
  if (messages[0].role == "system") {
    system = PyStrip(messages[0].content);
    messages = messages.subspan(1);
  }
  std::string date = t.fixed_date;
  if (t.date_is_today) {  // strftime_now("%d %b %Y"), months in English as Python's C locale writes them
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const absl::CivilDay d = o.today ? *o.today : absl::ToCivilDay(absl::Now(), absl::LocalTimeZone());
    date = absl::StrFormat("%02d %s %04d", d.day(), kMonths[d.month() - 1], d.year());
  }
  return absl::StrCat("<|start_header_id|>system<|end_header_id|>\n\n", t.knowledge_line, "Today Date: ", date, "\n\n",
                      system, "<|eot_id|>", Llama3Turns(messages, o));
}

std::string Gemma(const Turns& c, const ChatOptions& o) {
  std::string out;
  for (size_t i = 0; i < c.turns.size(); ++i) {
    const ChatMessage& m = *c.turns[i];
    // gemma-3: first_user_prefix = messages[0]['content'] + '\n\n' (untrimmed) before the first turn's text.
    const std::string prefix = i == 0 && c.has_system ? absl::StrCat(c.system, "\n\n") : "";
    absl::StrAppend(&out, "<start_of_turn>", m.role == "assistant" ? "model" : "user", "\n", prefix, PyStrip(m.content),
                    "<end_of_turn>\n");
  }
  if (o.add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

std::string Llama2(const ChatTemplate& t, const Turns& c) {
  std::string out;
  for (size_t i = 0; i < c.turns.size(); ++i) {
    const ChatMessage& m = *c.turns[i];
    // The system text joins the first turn before the whole is stripped, so
    // its own whitespace stays.
    const std::string content =
        i == 0 && c.has_system ? absl::StrCat("<<SYS>>\n", c.system, "\n<</SYS>>\n\n", m.content) : m.content;
    if (m.role == "user") {
      // bos_token + '[INST] ': the first BOS is the tokenizer's, later ones are text.
      absl::StrAppend(&out, i == 0 ? "" : t.bos, "[INST] ", PyStrip(content), " [/INST]");
    } else {
      absl::StrAppend(&out, " ", PyStrip(content), " ", t.eos);
    }
  }
  return out;
}

std::string Mistral(const ChatTemplate& t, const Turns& c) {
  using System = ChatTemplate::Mistral::System;
  const ChatTemplate::Mistral& p = t.mistral;
  std::string out;
  for (size_t i = 0; i < c.turns.size(); ++i) {
    const ChatMessage& m = *c.turns[i];
    if (m.role == "assistant") {
      absl::StrAppend(&out, p.answer_prefix, p.trim_answer ? PyStrip(m.content) : absl::string_view(m.content), t.eos,
                      p.after_eos);
      continue;
    }
    // {% if loop.first (or loop.last) and system_message is defined %}: the
    // last-turn form drops the system text when the chat ends on an answer,
    // as the template does.
    const bool with_system = c.has_system && ((p.system == System::kFirstUser && i == 0) ||
                                              (p.system == System::kLastUser && i + 1 == c.turns.size()));
    absl::StrAppend(&out, p.open, with_system ? absl::StrCat(c.system, "\n\n") : "", m.content, p.close);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> RenderChat(const ChatTemplate& t, std::span<const ChatMessage> messages,
                                       const ChatOptions& options) {
  if (messages.empty()) return absl::InvalidArgumentError("the chat has no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant") {
      return Invalid(i, absl::StrCat("role '", r, "' is not one of system, user, assistant (ferry renders no tool calls "
                                     "or tool results)"));
    }
  }
  switch (t.family) {
    case ChatFamily::kChatml: return Chatml(t, messages, options);
    case ChatFamily::kQwen3: return Qwen3(messages, options);
    case ChatFamily::kLlama3: return Llama3Turns(messages, options);
    case ChatFamily::kLlama31: return Llama31(t, messages, options);
    case ChatFamily::kGemma:
    case ChatFamily::kGemma3:
    case ChatFamily::kLlama2:
    case ChatFamily::kMistral: {
      using System = ChatTemplate::Mistral::System;
      const bool system_allowed = t.family == ChatFamily::kGemma3 || t.family == ChatFamily::kLlama2 ||
                                  (t.family == ChatFamily::kMistral && t.mistral.system != System::kNone);
      absl::StatusOr<Turns> c = Alternating(messages, t, system_allowed);
      if (!c.ok()) return c.status();
      if (t.family == ChatFamily::kLlama2) return Llama2(t, *c);
      if (t.family == ChatFamily::kMistral) return Mistral(t, *c);
      return Gemma(*c, options);
    }
  }
  return absl::InternalError("unknown chat family");
}

}  // namespace ferry::text
