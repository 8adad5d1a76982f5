// Where the real model files kept beside the repo live (../shared/models).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

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

}  // namespace ferry::testing
