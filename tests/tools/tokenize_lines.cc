// For tokenizer comparisons: reads a GGUF file's tokenizer, then lines of
// hex-encoded UTF-8 text on stdin, and prints each line's token ids (no BOS)
// separated by spaces, one line per input line.
#include <cstdio>
#include <iostream>
#include <string>

#include "engine/gguf/gguf.h"
#include "engine/text/tokenizer.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tokenize_lines MODEL.gguf < hex-lines\n");
    return 2;
  }
  auto file = ferry::gguf::File::Open(argv[1]);
  if (!file.ok()) {
    std::fprintf(stderr, "%s\n", std::string(file.status().message()).c_str());
    return 1;
  }
  auto tok = ferry::text::Tokenizer::FromGguf(**file);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tok.status().message()).c_str());
    return 1;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    std::string text;
    for (size_t i = 0; i + 1 < line.size(); i += 2) text += static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16));
    const std::vector<int32_t> ids = (*tok)->Encode(text, false);
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ' ';
      out += std::to_string(ids[i]);
    }
    std::printf("%s\n", out.c_str());
  }
  return 0;
}
