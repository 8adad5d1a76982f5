// libFuzzer target: chat templates. The whole input is a template's source
// for ParseChatTemplate (which reads a family and its parameters from Jinja
// text); then the input is a conversation rendered with the parsed template
// or, when it is not one, with a template of the family the first byte
// picks: messages separated by 0x1e, each a role byte (system, user,
// assistant or an arbitrary role) and its content. Any input gives a
// template or FAILED_PRECONDITION, and a text or INVALID_ARGUMENT; a chatml
// text (no default system prompt) holds every message's content verbatim.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "engine/text/chat.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ferry::text::ChatFamily;
  const std::string input(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ferry::text::ChatTemplate> parsed = ferry::text::ParseChatTemplate(input, "<s>", "</s>");
  if (!parsed.ok() && parsed.status().code() != absl::StatusCode::kFailedPrecondition) std::abort();
  if (size == 0) return 0;

  constexpr ChatFamily kFamilies[] = {ChatFamily::kChatml, ChatFamily::kQwen3,   ChatFamily::kLlama2,
                                      ChatFamily::kLlama3, ChatFamily::kLlama31, ChatFamily::kGemma,
                                      ChatFamily::kGemma3, ChatFamily::kMistral};
  ferry::text::ChatTemplate tmpl;
  if (parsed.ok()) {
    tmpl = *parsed;
  } else {
    tmpl.family = kFamilies[data[0] % 8];
    tmpl.mistral.open = "[INST] ";
    tmpl.mistral.close = " [/INST]";
  }
  ferry::text::ChatOptions options;
  options.add_generation_prompt = (data[0] & 0x80) != 0;
  options.enable_thinking = (data[0] & 0x40) != 0;
  options.today = absl::CivilDay(2026, 12, 4);  // a fixed date: the output depends on the input alone
  std::vector<ferry::text::ChatMessage> messages;
  size_t i = 1;
  while (i < size) {
    const size_t end = std::min(input.find('\x1e', i), size);
    const uint8_t r = data[i];
    const char* role = r % 4 == 0 ? "system" : r % 4 == 1 ? "user" : r % 4 == 2 ? "assistant" : nullptr;
    const std::string content = input.substr(i + 1, end > i ? end - i - 1 : 0);
    messages.push_back({role != nullptr ? std::string(role) : input.substr(i, std::min<size_t>(end - i, 3)), content});
    i = end + 1;
  }
  absl::StatusOr<std::string> text = ferry::text::RenderChat(tmpl, messages, options);
  if (!text.ok()) {
    if (text.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (tmpl.family == ChatFamily::kChatml) {
    for (const ferry::text::ChatMessage& m : messages) {
      if (!absl::StrContains(*text, m.content)) std::abort();  // a message's content went missing
    }
  }
  return 0;
}
