// gRPC status code names as gRPC spells them ("OK", "INVALID_ARGUMENT",
// ...): the `code` label of ferry_requests_total{api="grpc"} and loadgen's
// error table; and the HTTP statuses of ferry_requests_total{api="http"}.
#pragma once

#include <span>

namespace ferry::service {

inline constexpr const char* kGrpcCodeNames[] = {
    "OK",        "CANCELLED",          "UNKNOWN",             "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",   "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",        "UNAVAILABLE",         "DATA_LOSS",        "UNAUTHENTICATED"};

// Every status an HTTP completions request can end with (499: the client
// went away first, as nginx counts it).
inline constexpr const char* kHttpCodeNames[] = {"200", "400", "401", "405", "413", "429", "499", "500", "503"};

// The name of gRPC status code `code` (a grpc::StatusCode); "UNKNOWN" outside 0..16.
inline const char* GrpcCodeName(int code) {
  return code >= 0 && code < static_cast<int>(std::size(kGrpcCodeNames)) ? kGrpcCodeNames[code] : "UNKNOWN";
}

}  // namespace ferry::service
