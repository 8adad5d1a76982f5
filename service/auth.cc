#include "service/auth.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ferry::service {

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  const std::string what = absl::StrCat("--auth_token_file ", path);
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(what, ": cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a regular file"));
  }
  const auto mode = static_cast<unsigned>(st.st_mode & 07777);
  absl::Status refused;
  if (st.st_size > static_cast<off_t>(kMaxTokenFileBytes)) {
    refused = absl::InvalidArgumentError(absl::StrCat(what, " is ", st.st_size, " bytes; a token file holds one token of at most ",
                                                      kMaxTokenFileBytes, " bytes"));
  } else if ((mode & (S_IWGRP | S_IWOTH)) != 0) {
    refused = absl::PermissionDeniedError(absl::StrFormat(
        "%s is writable by %s (mode %04o): whoever can write it chooses the token; chmod 600 (or 640) it", what,
        (mode & S_IWOTH) != 0 ? "every user" : "its group", mode));
  } else if ((mode & S_IROTH) != 0) {
    refused = absl::PermissionDeniedError(absl::StrFormat(
        "%s is readable by every user (mode %04o); chmod 600 (or 640 for a group such as a Kubernetes fsGroup)", what,
        mode));
  }
  if (!refused.ok()) {
    ::close(fd);
    return refused;
  }
  std::string token(kMaxTokenFileBytes + 1, '\0');
  size_t n = 0;
  while (n < token.size()) {
    const ssize_t r = ::read(fd, token.data() + n, token.size() - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat(what, ": read failed: ", std::strerror(err)));
    }
    if (r == 0) break;
    n += static_cast<size_t>(r);
  }
  ::close(fd);
  if (n > kMaxTokenFileBytes) {  // grew since fstat
    return absl::InvalidArgumentError(absl::StrCat(what, " is over ", kMaxTokenFileBytes, " bytes"));
  }
  token.resize(n);
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  for (size_t i = 0; i < token.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(token[i]);
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": byte ", i, " (", static_cast<int>(c),
          ") is not printable ASCII; a token travels in an HTTP/2 header value, which cannot carry it"));
    }
  }
  return token;
}

bool ConstantTimeEquals(absl::string_view given, absl::string_view want) {
  // One pass over the given value, reading want cyclically: the time
  // depends on the given length alone (the caller's own), never on want's
  // length or contents nor on where the first difference is. A loop over
  // want instead would take time in min(given, want) lengths, and an early
  // return on a length mismatch tells the length outright.
  if (want.empty()) return given.empty();
  unsigned char diff = given.size() != want.size() ? 1 : 0;
  const size_t w = want.size();
  for (size_t i = 0; i < given.size(); ++i) {
    diff |= static_cast<unsigned char>(static_cast<unsigned char>(given[i]) ^ static_cast<unsigned char>(want[i % w]));
  }
  return diff == 0;
}

absl::Status CheckBearer(std::span<const absl::string_view> values, absl::string_view token) {
  if (values.empty()) return absl::UnauthenticatedError("missing 'authorization: Bearer <token>' metadata");
  const std::string want = absl::StrCat("Bearer ", token);
  bool all = true;
  for (absl::string_view v : values) all &= ConstantTimeEquals(v, want);
  if (!all) {
    return absl::UnauthenticatedError(values.size() == 1 ? "the bearer token is not valid"
                                                         : "a bearer token among the authorization values is not valid");
  }
  return absl::OkStatus();
}

}  // namespace ferry::service
