#include "engine/units.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ferry {

std::string HumanBytes(uint64_t b) {
  if (b < 1024) return absl::StrCat(b, " B");
  constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b) / 1024.0;
  int u = 0;
  while (v >= 1024.0 && u < 3) {
    v /= 1024.0;
    ++u;
  }
  return absl::StrFormat("%.2f %s", v, kUnits[u]);
}

absl::StatusOr<uint64_t> ParseBytes(absl::string_view text) {
  const std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  size_t i = 0;
  while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || t[i] == '.')) ++i;
  double value = 0;
  if (i == 0 || !absl::SimpleAtod(t.substr(0, i), &value) || value < 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a size (like 8GiB, 512MiB)"));
  }
  const std::string unit(absl::StripAsciiWhitespace(absl::string_view(t).substr(i)));
  double scale = 1;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") scale = 1024.0;
  else if (unit == "m" || unit == "mb" || unit == "mib") scale = 1024.0 * 1024;
  else if (unit == "g" || unit == "gb" || unit == "gib") scale = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "tb" || unit == "tib") scale = 1024.0 * 1024 * 1024 * 1024;
  else return absl::InvalidArgumentError(absl::StrCat("'", text, "': unknown unit '", unit, "'"));
  return static_cast<uint64_t>(value * scale);
}

}  // namespace ferry
