// libFuzzer target: any byte string given to the GGUF reader yields a File
// or an error; a File's every accessor then stays inside the input.
#include <cstddef>
#include <cstdint>

#include "engine/gguf/gguf.h"

namespace {

size_t Exercise(const ferry::gguf::File& f);

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t sink = 0;
  // Both ways a file is opened: in full, and header only (planning, inspect).
  for (bool header_only : {false, true}) {
    absl::StatusOr<std::unique_ptr<ferry::gguf::File>> file =
        ferry::gguf::File::FromBuffer(std::span(data, size), {.header_only = header_only});
    if (file.ok()) sink += Exercise(**file);
  }
  return sink == 0xdeadbeef;  // keeps the reads from being optimized out; never true in practice
}

namespace {

size_t Exercise(const ferry::gguf::File& f) {
  using ferry::gguf::Value;
  using ferry::gguf::ValueType;
  size_t sink = 0;
  for (const auto& [key, value] : f.metadata()) {
    sink += key.size() + value.ToDisplayString().size() + value.TypeString().size();
    if (value.type == ValueType::kArray) {
      sink += value.Items(64).size();
      if (value.elem_type == ValueType::kString) sink += value.Strings().size();
    }
  }
  for (const char* key : {"general.architecture", "general.alignment", "llama.block_count", "tokenizer.ggml.tokens",
                          "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}) {
    sink += f.GetString(key).ok() + f.GetUint(key).ok() + f.GetInt(key).ok() + f.GetFloat(key).ok() +
            f.GetBool(key).ok() + f.GetStringArray(key).ok() + f.GetFloatArray(key).ok() + f.GetIntArray(key).ok();
  }
  for (const ferry::gguf::TensorInfo& t : f.tensors()) {
    // Touch the first and last byte: ASan reports any tensor outside the input.
    if (t.data != nullptr) sink += t.data[0] + t.data[t.bytes - 1];
    sink += t.ShapeString().size() + (f.FindTensor(t.name) == &t);
  }
  return sink;
}

}  // namespace
