// Chat prompts: messages rendered into the text a model was trained on. A
// GGUF file carries its template as Jinja source (tokenizer.chat_template);
// ferry does not run Jinja. It recognises the published templates of a few
// families by the expressions that decide their output, reads the
// parameters that vary between models of a family (a default system prompt,
// the [INST] spelling, the date line) from the template's string literals,
// and renders that family's format itself. A template that carries a
// family's markers but not the expressions ferry knows is refused, not
// approximated: a prompt that differs from the model's template by one space
// changes what the model sees.
#pragma once

#include <optional>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"

namespace ferry::text {

enum class ChatFamily {
  kChatml,   // <|im_start|>role\n...<|im_end|>\n, optionally a default system prompt (SmolLM2, Qwen2.5)
  kQwen3,    // chatml with <think> blocks: enable_thinking, earlier turns' reasoning removed
  kLlama2,   // [INST] <<SYS>>...<</SYS>> ... [/INST] answer </s><s>[INST] ...
  kLlama3,   // <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> (Llama 3.0)
  kLlama31,  // Llama 3.1/3.2/3.3: always a system turn with the knowledge and today's date lines
  kGemma,    // Gemma 1/2: <start_of_turn>user|model, no system role
  kGemma3,   // Gemma 3: the system text goes before the first user turn's text
  kMistral,  // [INST] ... [/INST] answer</s>, spelling and system placement read from the template
};
const char* ChatFamilyName(ChatFamily family);
// "chatml, qwen3, llama-2, ...": the names refusals list.
std::string RecognisedChatFamilies();

// A recognised template: its family and the parameters read from it.
struct ChatTemplate {
  ChatFamily family = ChatFamily::kChatml;
  // The model's BOS and EOS token text, for formats that write them between
  // turns (llama-2: <s>, mistral and llama-2: </s>). The BOS a template puts
  // at the very start is not rendered: the tokenizer adds it by the model's
  // tokenizer.ggml.add_bos_token.
  std::string bos = "<s>", eos = "</s>";
  // chatml: the system prompt the template puts first when the chat has
  // none; empty when it has none.
  std::string default_system;
  // llama-3.1: the line before "Today Date: " (e.g. "Cutting Knowledge Date:
  // December 2023\n") and the date: the template's fixed default, or today's
  // ("%d %b %Y") when the template asks for strftime_now.
  std::string knowledge_line;
  std::string fixed_date;
  bool date_is_today = false;
  // mistral: user turns are open + content + close; an answer is
  // answer_prefix + content (trimmed if trim_answer) + eos + after_eos. The
  // system text goes before the first or the last user turn's text
  // (system + "\n\n" + user), or the format has no system role.
  struct Mistral {
    std::string open, close, answer_prefix, after_eos;
    bool trim_answer = false;
    enum class System { kNone, kFirstUser, kLastUser } system = System::kNone;
  } mistral;

  // One line for logs and refusals: the family and its parameters.
  std::string Describe() const;
};

// Recognises a tokenizer.chat_template. FAILED_PRECONDITION for an empty
// template, for one of no known family, and for one with a family's markers
// whose expressions ferry does not know (the message says which family it
// resembles and what was missing); every message lists the recognised
// families and says to send the rendered prompt as text instead.
absl::StatusOr<ChatTemplate> ParseChatTemplate(absl::string_view source, absl::string_view bos_text,
                                               absl::string_view eos_text);

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};

struct ChatOptions {
  bool add_generation_prompt = true;  // ignored by llama-2 and mistral, whose templates end on [/INST]
  bool enable_thinking = true;        // qwen3: false appends the empty <think>\n\n</think>\n\n block
  // llama-3.1 templates that print today's date (strftime_now): the date to
  // print; unset means the local date now, as Hugging Face and llama.cpp do.
  std::optional<absl::CivilDay> today;
};

// The prompt text, without the BOS token at the start. Refused with
// INVALID_ARGUMENT, as the model's template would raise or drop it: no
// messages; a role other than system, user, assistant (ferry renders no tool
// calls or tool results); in the gemma, gemma-3, llama-2 and mistral formats
// a system message that is not first, a system message at all where the
// format has none, turns that do not alternate user/assistant starting with
// user, or no user turn. Whitespace is trimmed exactly where each template
// trims it (Python's str.strip, Unicode whitespace included).
absl::StatusOr<std::string> RenderChat(const ChatTemplate& tmpl, std::span<const ChatMessage> messages,
                                       const ChatOptions& options);

}  // namespace ferry::text
