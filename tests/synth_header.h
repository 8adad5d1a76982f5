// A synthetic model's GGUF header alone (no tensor data), opened as a
// header-only file: what `ferry plan` and the host measurement read.
#pragma once

#include <memory>
#include <span>
#include <string>

#include <gtest/gtest.h>

#include "engine/gguf/gguf.h"
#include "engine/gguf/writer.h"
#include "engine/model/config.h"
#include "engine/model/synth.h"

namespace ferry::testing {

struct SynthHeader {
  std::string bytes;  // what `file` was opened from
  std::unique_ptr<gguf::File> file;
  model::ModelConfig config;
};

inline SynthHeader MakeSynthHeader(const model::SynthOptions& o) {
  gguf::Writer w;
  const absl::Status built = model::BuildSyntheticModel(o, &w);
  EXPECT_TRUE(built.ok()) << built;
  SynthHeader h;
  h.bytes = w.HeaderBytes();
  auto f = gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(h.bytes.data()), h.bytes.size()),
                                  {.header_only = true});
  EXPECT_TRUE(f.ok()) << f.status();
  if (!f.ok()) return h;
  h.file = std::move(*f);
  h.config = *model::LoadConfig(*h.file);
  return h;
}

}  // namespace ferry::testing
