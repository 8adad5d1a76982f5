#include "engine/text/chat.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ferry::text {

const char* ChatFamilyName(ChatFamily family) {
  switch (family) {
    case ChatFamily::kChatml: return "chatml";
    case ChatFamily::kLlama2: return "llama-2";
    case ChatFamily::kLlama3: return "llama-3";
    case ChatFamily::kGemma: return "gemma";
    case ChatFamily::kMistral: return "mistral";
  }
  return "?";
}

absl::StatusOr<ChatFamily> DetectChatFamily(absl::string_view t) {
  if (t.empty()) {
    return absl::FailedPreconditionError(
        "this model has no chat template (tokenizer.chat_template): send the prompt as text or token ids");
  }
  if (absl::StrContains(t, "<|im_start|>")) return ChatFamily::kChatml;
  if (absl::StrContains(t, "<|start_header_id|>")) return ChatFamily::kLlama3;
  if (absl::StrContains(t, "<start_of_turn>")) return ChatFamily::kGemma;
  if (absl::StrContains(t, "[INST]")) {
    return absl::StrContains(t, "<<SYS>>") ? ChatFamily::kLlama2 : ChatFamily::kMistral;
  }
  return absl::FailedPreconditionError(
      "this model's chat template is not one ferry renders (recognised: chatml, llama-2, llama-3, gemma, mistral): "
      "render the conversation yourself and send it as text");
}

namespace {

// Families without a system role: its text goes before the first user turn,
// and the turns must then alternate user, assistant, user, ...
absl::StatusOr<std::vector<ChatMessage>> Alternating(std::span<const ChatMessage> messages, ChatFamily family) {
  std::vector<ChatMessage> turns;
  std::string system;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "system") {
      system = std::string(absl::StripAsciiWhitespace(m.content));
      continue;
    }
    const bool user_turn = turns.size() % 2 == 0;
    if (m.role != (user_turn ? "user" : "assistant")) {
      return absl::InvalidArgumentError(absl::StrCat("chat message ", i, ": the ", ChatFamilyName(family),
                                                     " template needs turns alternating user/assistant starting with "
                                                     "user; expected ",
                                                     user_turn ? "user" : "assistant", ", got '", m.role, "'"));
    }
    turns.push_back({m.role, std::string(absl::StripAsciiWhitespace(m.content))});
  }
  if (turns.empty()) return absl::InvalidArgumentError("the chat has no user message");
  if (!system.empty()) {
    turns[0].content = family == ChatFamily::kLlama2 ? absl::StrCat("<<SYS>>\n", system, "\n<</SYS>>\n\n", turns[0].content)
                                                     : absl::StrCat(system, "\n\n", turns[0].content);
  }
  return turns;
}

}  // namespace

absl::StatusOr<std::string> RenderChat(ChatFamily family, std::span<const ChatMessage> messages,
                                       bool add_generation_prompt) {
  if (messages.empty()) return absl::InvalidArgumentError("the chat has no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant") {
      return absl::InvalidArgumentError(
          absl::StrCat("chat message ", i, ": role '", r, "' is not one of system, user, assistant"));
    }
    if (r == "system" && i != 0) {
      return absl::InvalidArgumentError(absl::StrCat("chat message ", i, ": a system message may only come first"));
    }
  }
  std::string out;
  switch (family) {
    case ChatFamily::kChatml:
      for (const ChatMessage& m : messages) absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFamily::kLlama3:
      for (const ChatMessage& m : messages) {
        absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n",
                        absl::StripAsciiWhitespace(m.content), "<|eot_id|>");
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case ChatFamily::kGemma: {
      absl::StatusOr<std::vector<ChatMessage>> turns = Alternating(messages, family);
      if (!turns.ok()) return turns.status();
      for (const ChatMessage& m : *turns) {
        absl::StrAppend(&out, "<start_of_turn>", m.role == "assistant" ? "model" : "user", "\n", m.content,
                        "<end_of_turn>\n");
      }
      if (add_generation_prompt) out += "<start_of_turn>model\n";
      return out;
    }
    case ChatFamily::kLlama2:
    case ChatFamily::kMistral: {
      absl::StatusOr<std::vector<ChatMessage>> turns = Alternating(messages, family);
      if (!turns.ok()) return turns.status();
      const bool llama2 = family == ChatFamily::kLlama2;
      for (size_t i = 0; i < turns->size(); ++i) {
        const ChatMessage& m = (*turns)[i];
        if (m.role == "user") {
          if (i > 0 && llama2) out += "<s>";  // every later exchange opens with BOS in llama-2's format
          absl::StrAppend(&out, "[INST] ", m.content, " [/INST]");
        } else {
          absl::StrAppend(&out, llama2 ? " " : "", m.content, llama2 ? " </s>" : "</s>");
        }
      }
      // Both formats end on the user's [/INST]: the answer follows directly.
      (void)add_generation_prompt;
      return out;
    }
  }
  return absl::InternalError("unknown chat family");
}

}  // namespace ferry::text
