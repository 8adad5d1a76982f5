// A synthetic model written to a string and loaded from it, for tests that
// need a real model without touching the disk.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <span>
#include <string>

#include "engine/model/synth.h"
#include "engine/model/weights.h"

namespace ferry::testing {

struct InMemoryModel {
  std::string bytes;  // the GGUF file; the model views it
  std::unique_ptr<model::Model> model;
};

inline InMemoryModel BuildInMemory(const model::SynthOptions& options) {
  gguf::Writer w;
  EXPECT_TRUE(model::BuildSyntheticModel(options, &w).ok());
  InMemoryModel b;
  b.bytes = *w.WriteToString();
  auto file = gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(b.bytes.data()), b.bytes.size()));
  EXPECT_TRUE(file.ok()) << file.status();
  auto m = model::LoadModel(std::move(*file));
  EXPECT_TRUE(m.ok()) << m.status();
  b.model = std::move(*m);
  return b;
}

}  // namespace ferry::testing
