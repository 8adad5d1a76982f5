// libFuzzer target: any byte string given to the GGUF reader yields a File
// or an error; a File's every accessor then stays inside the input.
#include <cstddef>
#include <cstdint>

#include "engine/gguf/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ferry::gguf::File;
  using ferry::gguf::Value;
  using ferry::gguf::ValueType;
  absl::StatusOr<std::unique_ptr<File>> file = File::FromBuffer(std::span(data, size));
  if (!file.ok()) return 0;
  const File& f = **file;
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
    sink += t.data[0] + t.data[t.bytes - 1] + t.ShapeString().size();
    sink += f.FindTensor(t.name) == &t;
  }
  return sink == 0xdeadbeef;  // keeps the reads from being optimized out; never true in practice
}
