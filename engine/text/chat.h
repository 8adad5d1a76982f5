// Chat prompts: messages rendered into the text a model was trained on. A
// GGUF file carries its template as Jinja source (tokenizer.chat_template);
// ferry does not run Jinja, it recognises the template's family by the
// markers the family uses and renders that family's format itself.
#pragma once

#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::text {

enum class ChatFamily { kChatml, kLlama2, kLlama3, kGemma, kMistral };
const char* ChatFamilyName(ChatFamily family);

// The family of a tokenizer.chat_template; FAILED_PRECONDITION for an empty
// or unrecognised template (the message lists what is recognised).
absl::StatusOr<ChatFamily> DetectChatFamily(absl::string_view chat_template);

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};

// The prompt text, without the BOS token (the tokenizer adds it by the
// model's rule). Refused with INVALID_ARGUMENT: no messages, an unknown
// role, a system message after the first, turns that do not alternate
// user/assistant where the family requires it.
//  - chatml: <|im_start|>{role}\n{content}<|im_end|>\n per message
//  - llama-3: <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>
//  - gemma: <start_of_turn>{user|model}\n{content}<end_of_turn>\n; gemma has
//    no system role: a system message is put before the first user turn's text
//  - llama-2: [INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
//  - mistral: [INST] {user} [/INST]{assistant}</s>[INST] ...; system text
//    goes before the first user turn's text
// Content is trimmed of surrounding whitespace except for chatml, as the
// families' reference templates do.
absl::StatusOr<std::string> RenderChat(ChatFamily family, std::span<const ChatMessage> messages,
                                       bool add_generation_prompt);

}  // namespace ferry::text
