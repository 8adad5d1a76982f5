// Where the real model files kept beside the repo live (../shared/models).
#pragma once

#include <filesystem>
#include <string>

namespace ferry::testing {

inline std::string SharedModel(const std::string& name) {
  return (std::filesystem::path(FERRY_SHARED_MODELS_DIR) / name).string();
}

// Skips the calling test, with the reason, when the file is absent.
#define FERRY_REQUIRE_SHARED_MODEL(path)                                                        \
  if (!std::filesystem::exists(path)) {                                                        \
    GTEST_SKIP() << "needs " << (path) << " (the ../shared/models folder beside the repo)"; \
  }

}  // namespace ferry::testing
