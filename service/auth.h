// The bearer token of `ferry serve --auth_token_file`: read once at start-up
// with the file's size, kind and permissions checked, and compared with
// every `authorization` value a call carries.
#pragma once

#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::service {

// A token file holds one token: anything longer is a wrong file.
constexpr size_t kMaxTokenFileBytes = 4096;

// The token in `path`, trailing new lines and spaces dropped. Refused, with
// the reason: not a regular file (a FIFO or device is never opened for a
// blocking read), longer than kMaxTokenFileBytes, writable by group or
// others (they would choose the token) or readable by others, empty, or
// holding a byte that gRPC metadata cannot carry (outside printable ASCII).
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// `given` equals `want`, in a time that depends on the given value's length
// alone: not on want's length or bytes, nor on where they first differ.
bool ConstantTimeEquals(absl::string_view given, absl::string_view want);

// The call's `authorization` values against "Bearer <token>": every value
// must match (a wrong one among right ones fails the call, in whatever
// order), and at least one must be there. UNAUTHENTICATED otherwise.
absl::Status CheckBearer(std::span<const absl::string_view> values, absl::string_view token);

}  // namespace ferry::service
