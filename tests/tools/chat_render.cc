// Renders a chat the way ferry does, for the check against Jinja:
//   chat_render TEMPLATE_FILE ADD_GENERATION_PROMPT(0|1) ROLE CONTENT [ROLE CONTENT ...]
// Prints the family, a NUL byte, then the rendered text; or the error and exit 1.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/text/chat.h"

int main(int argc, char** argv) {
  if (argc < 3 || (argc - 3) % 2 != 0) {
    std::fprintf(stderr, "usage: chat_render TEMPLATE_FILE 0|1 ROLE CONTENT ...\n");
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<ferry::text::ChatFamily> family = ferry::text::DetectChatFamily(ss.str());
  if (!family.ok()) {
    std::printf("%s", std::string(family.status().message()).c_str());
    return 1;
  }
  std::vector<ferry::text::ChatMessage> messages;
  for (int i = 3; i + 1 < argc; i += 2) messages.push_back({argv[i], argv[i + 1]});
  absl::StatusOr<std::string> text = ferry::text::RenderChat(*family, messages, std::string(argv[2]) == "1");
  if (!text.ok()) {
    std::printf("%s", std::string(text.status().message()).c_str());
    return 1;
  }
  std::fwrite(ferry::text::ChatFamilyName(*family), 1, std::string(ferry::text::ChatFamilyName(*family)).size(), stdout);
  std::fputc('\0', stdout);
  std::fwrite(text->data(), 1, text->size(), stdout);
  return 0;
}
