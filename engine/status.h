// Status plumbing shared by the engine: early returns on error.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FERRY_RETURN_IF_ERROR(expr)    \
  do {                                 \
    absl::Status ferry_status_ = (expr); \
    if (!ferry_status_.ok()) return ferry_status_; \
  } while (0)

// lhs = value of a StatusOr expression, or return its error.
#define FERRY_ASSIGN_OR_RETURN(lhs, expr) \
  do {                                    \
    auto ferry_value_ = (expr);           \
    if (!ferry_value_.ok()) return ferry_value_.status(); \
    lhs = std::move(*ferry_value_);       \
  } while (0)
