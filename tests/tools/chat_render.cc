// Renders a chat the way ferry does, for the check against Jinja:
//   chat_render --template=FILE [--gen=0|1] [--thinking=0|1] [--today=YYYY-MM-DD]
//               [--bos=TEXT] [--eos=TEXT] -- ROLE CONTENT [ROLE CONTENT ...]
// Prints the family, a NUL byte, the template's description, a NUL byte and
// the rendered text; or the error and exits 1.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/civil_time.h"
#include "engine/text/chat.h"

ABSL_FLAG(std::string, template_file, "", "file holding the tokenizer.chat_template source");
ABSL_FLAG(bool, gen, true, "add_generation_prompt");
ABSL_FLAG(bool, thinking, true, "enable_thinking (qwen3)");
ABSL_FLAG(std::string, today, "", "the date llama-3.1 templates print as today's, YYYY-MM-DD");
ABSL_FLAG(std::string, bos, "<s>", "the model's BOS token text");
ABSL_FLAG(std::string, eos, "</s>", "the model's EOS token text");

int main(int argc, char** argv) {
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() % 2 != 1 || absl::GetFlag(FLAGS_template_file).empty()) {
    std::fprintf(stderr, "usage: chat_render --template_file=FILE [flags] -- ROLE CONTENT ...\n");
    return 2;
  }
  std::ifstream in(absl::GetFlag(FLAGS_template_file), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<ferry::text::ChatTemplate> tmpl =
      ferry::text::ParseChatTemplate(ss.str(), absl::GetFlag(FLAGS_bos), absl::GetFlag(FLAGS_eos));
  if (!tmpl.ok()) {
    std::printf("%s", std::string(tmpl.status().message()).c_str());
    return 1;
  }
  std::vector<ferry::text::ChatMessage> messages;
  for (size_t i = 1; i + 1 < args.size(); i += 2) messages.push_back({args[i], args[i + 1]});
  ferry::text::ChatOptions options;
  options.add_generation_prompt = absl::GetFlag(FLAGS_gen);
  options.enable_thinking = absl::GetFlag(FLAGS_thinking);
  if (absl::CivilDay day; !absl::GetFlag(FLAGS_today).empty()) {
    if (!absl::ParseCivilTime(absl::GetFlag(FLAGS_today), &day)) {
      std::fprintf(stderr, "--today: not YYYY-MM-DD\n");
      return 2;
    }
    options.today = day;
  }
  absl::StatusOr<std::string> text = ferry::text::RenderChat(*tmpl, messages, options);
  if (!text.ok()) {
    std::printf("%s", std::string(text.status().message()).c_str());
    return 1;
  }
  const std::string family = ferry::text::ChatFamilyName(tmpl->family), describe = tmpl->Describe();
  std::fwrite(family.data(), 1, family.size(), stdout);
  std::fputc('\0', stdout);
  std::fwrite(describe.data(), 1, describe.size(), stdout);
  std::fputc('\0', stdout);
  std::fwrite(text->data(), 1, text->size(), stdout);
  return 0;
}
