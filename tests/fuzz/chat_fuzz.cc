// libFuzzer target: the chat-template renderer. The input is a template
// source (for DetectChatFamily) and a conversation: the first byte picks the
// family, then messages separated by 0x1e, each a role byte (system, user,
// assistant or an arbitrary role) and its content. Any input gives a text or
// INVALID_ARGUMENT / FAILED_PRECONDITION; a text holds every message's
// content (whitespace-trimmed where the family trims).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "engine/text/chat.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ferry::text::ChatFamily;
  const std::string input(reinterpret_cast<const char*>(data), size);
  // The whole input as a template's source.
  absl::StatusOr<ChatFamily> detected = ferry::text::DetectChatFamily(input);
  if (!detected.ok() && detected.status().code() != absl::StatusCode::kFailedPrecondition) std::abort();
  if (size == 0) return 0;

  constexpr ChatFamily kFamilies[] = {ChatFamily::kChatml, ChatFamily::kLlama2, ChatFamily::kLlama3,
                                      ChatFamily::kGemma, ChatFamily::kMistral};
  const ChatFamily family = kFamilies[data[0] % 5];
  const bool generation_prompt = (data[0] & 0x80) != 0;
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
  absl::StatusOr<std::string> text = ferry::text::RenderChat(family, messages, generation_prompt);
  if (!text.ok()) {
    if (text.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  for (const ferry::text::ChatMessage& m : messages) {
    const absl::string_view want =
        family == ChatFamily::kChatml ? absl::string_view(m.content) : absl::StripAsciiWhitespace(m.content);
    if (!absl::StrContains(*text, want)) std::abort();  // a message's content went missing
  }
  return 0;
}
