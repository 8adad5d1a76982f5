// Recognising a tokenizer.chat_template (chat.h says why ferry does not run
// Jinja). The template is first reduced to a canonical form in which two
// spellings of the same template compare equal; each family is then a list
// of canonical expressions that decide its output, some with holes for the
// string literals that vary between models of the family.
#include <algorithm>
#include <optional>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/text/chat.h"

namespace ferry::text {
namespace {

// Canonical form of Jinja source:
//  - comments dropped; whitespace-only text between tags dropped (templates
//    lay themselves out with it and remove it with "-" and trim_blocks);
//  - inside {{ }} and {% %}: whitespace control marks and whitespace outside
//    string literals dropped;
//  - string literals decoded (Jinja reads them with Python's unicode-escape)
//    and written back in single quotes with ' and \ escaped, so a literal
//    ends at the first unescaped '. An escape ferry does not decode becomes
//    a NUL byte, which no parameter read from the template may contain.
// Text outside tags is kept, with ' and \ escaped the same way.
void AppendEscaped(std::string* out, absl::string_view text) {
  for (char c : text) {
    if (c == '\'' || c == '\\') out->push_back('\\');
    out->push_back(c);
  }
}

void AppendUtf8(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool Hex(absl::string_view s, uint32_t* v) {
  *v = 0;
  for (char c : s) {
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return false;
    *v = *v * 16 + d;
  }
  return true;
}

// The body of a literal starting at s[i] (the quote); returns the index after
// the closing quote.
size_t DecodeLiteral(absl::string_view s, size_t i, std::string* body) {
  const char quote = s[i++];
  while (i < s.size() && s[i] != quote) {
    if (s[i] != '\\' || i + 1 >= s.size()) {
      body->push_back(s[i++]);
      continue;
    }
    const char e = s[i + 1];
    static constexpr absl::string_view kFrom = "ntr\\'\"bfva", kTo = "\n\t\r\\'\"\b\f\v\a";
    if (size_t k = kFrom.find(e); k != absl::string_view::npos) {
      body->push_back(kTo[k]);
      i += 2;
    } else if (uint32_t cp; (e == 'u' || e == 'x') && i + (e == 'u' ? 6 : 4) <= s.size() &&
                            Hex(s.substr(i + 2, e == 'u' ? 4 : 2), &cp)) {
      AppendUtf8(body, cp);
      i += e == 'u' ? 6 : 4;
    } else {
      body->push_back('\0');
      i += 2;
    }
  }
  return std::min(i + 1, s.size());  // an unterminated literal runs to the end
}

std::string Canonical(absl::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s.substr(i, 2) == "{#") {
      const size_t end = s.find("#}", i + 2);
      i = end == absl::string_view::npos ? s.size() : end + 2;
      continue;
    }
    if (s.substr(i, 2) == "{{" || s.substr(i, 2) == "{%") {
      const absl::string_view close = s[i + 1] == '{' ? "}}" : "%}";
      out.append(s.data() + i, 2);
      i += 2;
      if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
      while (i < s.size()) {
        const char c = s[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
          ++i;
        } else if ((c == '-' || c == '+') && s.substr(i + 1, 2) == close) {
          ++i;
        } else if (s.substr(i, 2) == close) {
          out.append(close.data(), close.size());
          i += 2;
          break;
        } else if (c == '\'' || c == '"') {
          std::string body;
          i = DecodeLiteral(s, i, &body);
          out.push_back('\'');
          AppendEscaped(&out, body);
          out.push_back('\'');
        } else {
          out.push_back(c);
          ++i;
        }
      }
      continue;
    }
    size_t j = i;
    while (j < s.size() && !(s[j] == '{' && j + 1 < s.size() && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#'))) {
      ++j;
    }
    const absl::string_view text = s.substr(i, j - i);
    if (text.find_first_not_of(" \t\n\r") != absl::string_view::npos) AppendEscaped(&out, text);
    i = j;
  }
  return out;
}

// Every match of `pattern` in the canonical template. A '$' in the pattern
// is a hole: the rest of a string literal's body, up to its closing quote
// (so a '$' is always followed by '\''). Returns the holes' decoded bodies,
// one vector per match.
std::vector<std::vector<std::string>> FindAll(absl::string_view canon, absl::string_view pattern) {
  std::vector<std::vector<std::string>> matches;
  for (size_t start = 0; start < canon.size(); ++start) {
    size_t at = start;
    std::vector<std::string> holes;
    bool ok = true;
    for (size_t p = 0; p < pattern.size() && ok;) {
      if (pattern[p] == '$') {
        std::string body;
        while (at < canon.size() && canon[at] != '\'') {
          if (canon[at] == '\\' && at + 1 < canon.size()) ++at;
          body.push_back(canon[at++]);
        }
        holes.push_back(std::move(body));
        ++p;
        continue;
      }
      const size_t hole = pattern.find('$', p);
      const absl::string_view fixed = pattern.substr(p, hole == absl::string_view::npos ? hole : hole - p);
      ok = canon.substr(at, fixed.size()) == fixed;
      at += fixed.size();
      p += fixed.size();
    }
    if (ok) matches.push_back(std::move(holes));
  }
  return matches;
}

// The holes of the one distinct match of `pattern`, or nothing when it has
// no match or matches with different holes.
std::optional<std::vector<std::string>> FindOne(absl::string_view canon, absl::string_view pattern) {
  std::vector<std::vector<std::string>> all = FindAll(canon, pattern);
  if (all.empty()) return std::nullopt;
  for (const auto& m : all) {
    if (m != all[0]) return std::nullopt;
  }
  return all[0];
}

absl::Status NotRecognised(absl::string_view resembles, absl::string_view missing) {
  return absl::FailedPreconditionError(absl::StrCat(
      "this model's chat template looks like the ", resembles, " format but is not a version ferry renders exactly (",
      missing, "); recognised: ", RecognisedChatFamilies(), ". Render the conversation yourself and send it as text"));
}

// The first of `required` that the template lacks, or "" when it has them all.
std::string Missing(absl::string_view canon, std::initializer_list<absl::string_view> required) {
  for (absl::string_view r : required) {
    if (!absl::StrContains(canon, r)) return absl::StrCat("no `", r, "`");
  }
  return "";
}

size_t Count(absl::string_view canon, absl::string_view what) {
  size_t n = 0;
  for (size_t at = canon.find(what); at != absl::string_view::npos; at = canon.find(what, at + 1)) ++n;
  return n;
}

bool HasNul(absl::string_view s) { return s.find('\0') != absl::string_view::npos; }

constexpr absl::string_view kAlternates = "(message['role']=='user')!=(loop.index0%2==0)";

absl::Status ParseChatml(absl::string_view canon, ChatTemplate* t) {
  t->family = ChatFamily::kChatml;
  if (!absl::StrContains(canon, "'<|im_start|>'+message['role']+'\n'+message['content']+'<|im_end|>'+'\n'") &&
      !absl::StrContains(canon, "'<|im_start|>'+message.role+'\n'+message.content+'<|im_end|>'+'\n'")) {
    return NotRecognised("chatml", "no `'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                                   "'<|im_end|>' + '\\n'` for each message");
  }
  if (std::string m = Missing(canon, {"{%ifadd_generation_prompt%}{{'<|im_start|>assistant\n'}}{%endif%}"}); !m.empty()) {
    return NotRecognised("chatml", m);
  }
  // A system turn opened unconditionally (Hermes' tool-use templates list
  // their tools in one) is output ferry would leave out; Qwen's templates
  // open one only when tools are given, which ferry never passes.
  if (Count(canon, "{{'<|im_start|>system\n'}}") != Count(canon, "{%iftools%}{{'<|im_start|>system\n'}}")) {
    return NotRecognised("chatml", "a system turn written whether or not the chat has one");
  }
  // A default system prompt is a literal holding a whole system turn.
  std::set<std::string> defaults;
  for (const auto& m : FindAll(canon, "'<|im_start|>system\n$'")) {
    constexpr absl::string_view kEnd = "<|im_end|>\n";
    if (m[0].size() > kEnd.size() && absl::EndsWith(m[0], kEnd)) defaults.insert(m[0].substr(0, m[0].size() - kEnd.size()));
  }
  if (defaults.size() > 1) return NotRecognised("chatml", "more than one default system prompt");
  if (defaults.empty()) return absl::OkStatus();
  const std::string& text = *defaults.begin();
  if (HasNul(text) || absl::StrContains(text, "<|im_")) {
    return NotRecognised("chatml", "a default system prompt ferry cannot read");
  }
  if (!absl::StrContains(canon, "messages[0]['role']!='system'") &&
      !absl::StrContains(canon, "messages[0]['role']=='system'") &&
      !absl::StrContains(canon, "messages[0].role=='system'")) {
    return NotRecognised("chatml", "a default system prompt without a test of whether the chat has one");
  }
  t->default_system = text;
  return absl::OkStatus();
}

absl::Status ParseQwen3(absl::string_view canon, ChatTemplate* t) {
  t->family = ChatFamily::kQwen3;
  std::string m = Missing(canon, {
      "{%ifmessages[0].role=='system'%}{{'<|im_start|>system\n'+messages[0].content+'<|im_end|>\n'}}{%endif%}",
      "{%setns=namespace(multi_step_tool=true,last_query_index=messages|length-1)%}",
      "{%ifns.multi_step_toolandmessage.role=='user'andnot(message.content.startswith('<tool_response>')and"
      "message.content.endswith('</tool_response>'))%}{%setns.multi_step_tool=false%}{%setns.last_query_index=index%}",
      "{%if(message.role=='user')or(message.role=='system'andnotloop.first)%}"
      "{{'<|im_start|>'+message.role+'\n'+message.content+'<|im_end|>'+'\n'}}",
      "{%if'</think>'inmessage.content%}{%setcontent=message.content.split('</think>')[-1].lstrip('\n')%}"
      "{%setreasoning_content=message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')%}",
      "{%ifloop.index0>ns.last_query_index%}{%ifloop.lastor(notloop.lastandreasoning_content)%}"
      "{{'<|im_start|>'+message.role+'\n<think>\n'+reasoning_content.strip('\n')+'\n</think>\n\n'+"
      "content.lstrip('\n')}}{%else%}{{'<|im_start|>'+message.role+'\n'+content}}{%endif%}"
      "{%else%}{{'<|im_start|>'+message.role+'\n'+content}}{%endif%}",
      "{{'<|im_end|>\n'}}",
      "{%ifadd_generation_prompt%}{{'<|im_start|>assistant\n'}}{%ifenable_thinkingisdefinedandenable_thinkingisfalse%}"
      "{{'<think>\n\n</think>\n\n'}}{%endif%}{%endif%}",
  });
  return m.empty() ? absl::OkStatus() : NotRecognised("qwen3 (chatml with <think>)", m);
}

constexpr absl::string_view kLlama3Turn =
    "'<|start_header_id|>'+message['role']+'<|end_header_id|>\n\n'+message['content']|trim+'<|eot_id|>'";
constexpr absl::string_view kLlama3Answer =
    "{%ifadd_generation_prompt%}{{'<|start_header_id|>assistant<|end_header_id|>\n\n'}}{%endif%}";

absl::Status ParseLlama3(absl::string_view canon, ChatTemplate* t) {
  if (!absl::StrContains(canon, "date_string")) {
    t->family = ChatFamily::kLlama3;
    if (std::string m = Missing(canon, {kLlama3Turn, kLlama3Answer}); !m.empty()) return NotRecognised("llama-3", m);
    if (absl::StrContains(canon, "messages[1:]")) return NotRecognised("llama-3", "a system message taken out of the turns");
    return absl::OkStatus();
  }
  t->family = ChatFamily::kLlama31;
  std::string m = Missing(canon, {
      "{%ifmessages[0]['role']=='system'%}{%setsystem_message=messages[0]['content']|trim%}"
      "{%setmessages=messages[1:]%}{%else%}{%setsystem_message=''%}{%endif%}",
      "{{'<|start_header_id|>system<|end_header_id|>\n\n'}}", "{{system_message}}{{'<|eot_id|>'}}", kLlama3Turn,
      kLlama3Answer});
  if (!m.empty()) return NotRecognised("llama-3.1", m);
  std::optional<std::vector<std::string>> line = FindOne(canon, "{{'$'}}{{'Today Date: '+date_string+'\n\n'}}");
  if (!line || !absl::StartsWith((*line)[0], "Cutting Knowledge Date: ") || HasNul((*line)[0])) {
    return NotRecognised("llama-3.1", "no \"Cutting Knowledge Date: ...\" line before \"Today Date: \"");
  }
  t->knowledge_line = (*line)[0];
  std::optional<std::vector<std::string>> fixed = FindOne(canon, "{%setdate_string='$'%}");
  if (!fixed || (*fixed)[0].empty() || HasNul((*fixed)[0])) return NotRecognised("llama-3.1", "no default date_string");
  t->fixed_date = (*fixed)[0];
  if (absl::StrContains(canon, "strftime_now")) {
    if (!absl::StrContains(canon, "{%ifstrftime_nowisdefined%}{%setdate_string=strftime_now('%d %b %Y')%}")) {
      return NotRecognised("llama-3.1", "a date format other than strftime_now(\"%d %b %Y\")");
    }
    t->date_is_today = true;
  }
  return absl::OkStatus();
}

absl::Status ParseGemma(absl::string_view canon, ChatTemplate* t) {
  const bool gemma3 = absl::StrContains(canon, "first_user_prefix");
  t->family = gemma3 ? ChatFamily::kGemma3 : ChatFamily::kGemma;
  const absl::string_view role =
      "{%if(message['role']=='assistant')%}{%setrole='model'%}{%else%}{%setrole=message['role']%}{%endif%}";
  const absl::string_view answer = "{%ifadd_generation_prompt%}{{'<start_of_turn>model\n'}}{%endif%}";
  std::string m = gemma3 ? Missing(canon, {"{%setfirst_user_prefix=messages[0]['content']+'\n\n'%}",
                                           "{%setloop_messages=messages[1:]%}{%else%}{%setfirst_user_prefix=''%}"
                                           "{%setloop_messages=messages%}{%endif%}{%formessageinloop_messages%}",
                                           kAlternates, role,
                                           "{{'<start_of_turn>'+role+'\n'+(first_user_prefixifloop.firstelse'')}}"
                                           "{%ifmessage['content']isstring%}{{message['content']|trim}}",
                                           "{{'<end_of_turn>\n'}}{%endfor%}", answer})
                         : Missing(canon, {"{%ifmessages[0]['role']=='system'%}{{raise_exception(",
                                           "{%formessageinmessages%}", kAlternates, role,
                                           "{{'<start_of_turn>'+role+'\n'+message['content']|trim+'<end_of_turn>\n'}}",
                                           answer});
  return m.empty() ? absl::OkStatus() : NotRecognised(ChatFamilyName(t->family), m);
}

absl::Status ParseLlama2(absl::string_view canon, ChatTemplate* t) {
  t->family = ChatFamily::kLlama2;
  std::string m = Missing(canon, {
      "{%ifmessages[0]['role']=='system'%}{%setloop_messages=messages[1:]%}{%setsystem_message=messages[0]['content']%}"
      "{%else%}{%setloop_messages=messages%}{%setsystem_message=false%}{%endif%}{%formessageinloop_messages%}",
      kAlternates,
      "{%ifloop.index0==0andsystem_message!=false%}{%setcontent='<<SYS>>\n'+system_message+'\n<</SYS>>\n\n'+"
      "message['content']%}{%else%}{%setcontent=message['content']%}{%endif%}",
      "{%ifmessage['role']=='user'%}{{bos_token+'[INST] '+content.strip()+' [/INST]'}}",
      "{%elifmessage['role']=='assistant'%}{{' '+content.strip()+' '+eos_token}}{%endif%}"});
  if (m.empty() && absl::StrContains(canon, "add_generation_prompt")) m = "an add_generation_prompt branch";
  return m.empty() ? absl::OkStatus() : NotRecognised("llama-2", m);
}

absl::Status ParseMistral(absl::string_view canon, ChatTemplate* t) {
  t->family = ChatFamily::kMistral;
  ChatTemplate::Mistral& p = t->mistral;
  std::optional<std::vector<std::string>> user = FindOne(canon, "{{'$'+message['content']+'$'}}");
  if (!user || !absl::StrContains((*user)[0], "[INST]") || !absl::StrContains((*user)[1], "[/INST]")) {
    return NotRecognised("mistral", "no single `'[INST]' + message['content'] + '[/INST]'` for user turns");
  }
  p.open = (*user)[0];
  p.close = (*user)[1];
  if (std::optional<std::vector<std::string>> sys =
          FindOne(canon, "{{'$'+system_message+'\n\n'+message['content']+'$'}}")) {
    if ((*sys)[0] != p.open || (*sys)[1] != p.close) return NotRecognised("mistral", "a system turn spelled unlike user turns");
    if (std::string m = Missing(canon, {"{%ifmessages[0]['role']=='system'%}{%setsystem_message=messages[0]['content']%}"
                                        "{%setloop_messages=messages[1:]%}{%else%}{%setloop_messages=messages%}{%endif%}"});
        !m.empty()) {
      return NotRecognised("mistral", m);
    }
    const bool first = absl::StrContains(canon, "{%ifloop.firstandsystem_messageisdefined%}");
    const bool last = absl::StrContains(canon, "{%ifloop.lastandsystem_messageisdefined%}");
    if (first == last) {
      return NotRecognised("mistral", "the system text is put neither before the first nor the last user turn");
    }
    p.system = first ? ChatTemplate::Mistral::System::kFirstUser : ChatTemplate::Mistral::System::kLastUser;
  } else if (absl::StrContains(canon, "system_message") || absl::StrContains(canon, "=='system'")) {
    return NotRecognised("mistral", "a system message handled in a way ferry does not know");
  }
  // The answer: ['prefix' +] message['content'] [|trim] + eos_token [+ 'suffix'].
  constexpr absl::string_view kAnswer = "{%elifmessage['role']=='assistant'%}{{";
  bool found = false;
  for (bool prefix : {false, true}) {
    for (bool trim : {false, true}) {
      for (bool suffix : {false, true}) {
        std::string pattern = absl::StrCat(kAnswer, prefix ? "'$'+" : "", "message['content']", trim ? "|trim" : "",
                                           "+eos_token", suffix ? "+'$'" : "", "}}");
        std::optional<std::vector<std::string>> a = FindOne(canon, pattern);
        if (!a) continue;
        if (found) return NotRecognised("mistral", "more than one way to write an answer");
        found = true;
        p.answer_prefix = prefix ? (*a)[0] : "";
        p.after_eos = suffix ? a->back() : "";
        p.trim_answer = trim;
      }
    }
  }
  if (!found) return NotRecognised("mistral", "no `message['content'] + eos_token` for answers");
  std::string m = Missing(canon, {"{{bos_token}}"});
  if (m.empty() && !absl::StrContains(canon, kAlternates) &&
      !absl::StrContains(canon, "(message['role']=='user')!=(ns.index%2==0)")) {
    m = "no check that turns alternate";
  }
  if (m.empty() && absl::StrContains(canon, "add_generation_prompt")) m = "an add_generation_prompt branch";
  if (m.empty() && (HasNul(p.open) || HasNul(p.close) || HasNul(p.answer_prefix) || HasNul(p.after_eos))) {
    m = "a literal ferry cannot read";
  }
  return m.empty() ? absl::OkStatus() : NotRecognised("mistral", m);
}

}  // namespace

const char* ChatFamilyName(ChatFamily family) {
  switch (family) {
    case ChatFamily::kChatml: return "chatml";
    case ChatFamily::kQwen3: return "qwen3";
    case ChatFamily::kLlama2: return "llama-2";
    case ChatFamily::kLlama3: return "llama-3";
    case ChatFamily::kLlama31: return "llama-3.1";
    case ChatFamily::kGemma: return "gemma";
    case ChatFamily::kGemma3: return "gemma-3";
    case ChatFamily::kMistral: return "mistral";
  }
  return "?";
}

std::string RecognisedChatFamilies() {
  std::vector<const char*> names;
  for (ChatFamily f : {ChatFamily::kChatml, ChatFamily::kQwen3, ChatFamily::kLlama2, ChatFamily::kLlama3,
                       ChatFamily::kLlama31, ChatFamily::kGemma, ChatFamily::kGemma3, ChatFamily::kMistral}) {
    names.push_back(ChatFamilyName(f));
  }
  return absl::StrJoin(names, ", ");
}

std::string ChatTemplate::Describe() const {
  std::string out = ChatFamilyName(family);
  auto quoted = [](absl::string_view s) {
    std::string q = "\"";
    for (char c : s) q += c == '\n' ? std::string("\\n") : std::string(1, c);
    return q + "\"";
  };
  switch (family) {
    case ChatFamily::kChatml:
      if (!default_system.empty()) absl::StrAppend(&out, " (default system prompt ", quoted(default_system), ")");
      break;
    case ChatFamily::kLlama31:
      absl::StrAppend(&out, " (", quoted(knowledge_line), ", date ", date_is_today ? "today" : fixed_date, ")");
      break;
    case ChatFamily::kMistral:
      absl::StrAppend(&out, " (", quoted(mistral.open), " user ", quoted(mistral.close), " ", quoted(mistral.answer_prefix),
                      " answer", mistral.trim_answer ? " trimmed" : "", " eos ", quoted(mistral.after_eos), ", system ",
                      mistral.system == Mistral::System::kNone        ? "refused"
                      : mistral.system == Mistral::System::kFirstUser ? "before the first user turn"
                                                                      : "before the last user turn",
                      ")");
      break;
    default:
      break;
  }
  return out;
}

absl::StatusOr<ChatTemplate> ParseChatTemplate(absl::string_view source, absl::string_view bos_text,
                                               absl::string_view eos_text) {
  if (source.empty()) {
    return absl::FailedPreconditionError(
        "this model has no chat template (tokenizer.chat_template): send the prompt as text or token ids");
  }
  const std::string canon = Canonical(source);
  ChatTemplate t;
  if (!bos_text.empty()) t.bos = std::string(bos_text);
  if (!eos_text.empty()) t.eos = std::string(eos_text);
  absl::Status s;
  if (absl::StrContains(canon, "<|im_start|>")) {
    // Qwen3's <think> handling is its own; other templates with <think>
    // (QwQ, DeepSeek-R1 distills, SmolLM3) open a think block ferry would omit.
    if (absl::StrContains(canon, "enable_thinking") && absl::StrContains(canon, "<think>")) {
      s = ParseQwen3(canon, &t);
    } else if (absl::StrContains(canon, "<think>")) {
      s = NotRecognised("chatml", "<think> blocks outside Qwen3's template");
    } else {
      s = ParseChatml(canon, &t);
    }
  } else if (absl::StrContains(canon, "<|start_header_id|>")) {
    s = ParseLlama3(canon, &t);
  } else if (absl::StrContains(canon, "<start_of_turn>")) {
    s = ParseGemma(canon, &t);
  } else if (absl::StrContains(canon, "[INST]")) {
    s = absl::StrContains(canon, "<<SYS>>") ? ParseLlama2(canon, &t) : ParseMistral(canon, &t);
  } else {
    s = absl::FailedPreconditionError(absl::StrCat("this model's chat template is not one ferry renders (recognised: ",
                                                   RecognisedChatFamilies(),
                                                   "): render the conversation yourself and send it as text"));
  }
  if (!s.ok()) return s;
  return t;
}

}  // namespace ferry::text
