#include "engine/backend/cuda/options.h"

#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/status.h"
#include "engine/units.h"

namespace ferry::backend {

absl::StatusOr<CudaOptions> ParseCudaOptions(absl::string_view spec) {
  CudaOptions o;
  bool first = true;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    const bool is_first = first;
    first = false;
    std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (is_first && item.find('=') == absl::string_view::npos) {
      if (!absl::SimpleAtoi(item, &o.index) || o.index < 0) {
        return absl::InvalidArgumentError(absl::StrCat("cuda: device index must be a number >= 0, got '", item, "'"));
      }
      continue;
    }
    // The on/off keys.
    const std::pair<const char*, bool*> switches[] = {
        {"poison", &o.poison}, {"int8", &o.int8}, {"int8_more", &o.int8_more}, {"graphs", &o.graphs},
        {"fuse", &o.fuse}};
    bool* on = nullptr;
    for (const auto& [name, field] : switches) {
      if (kv.first == name) on = field;
    }
    if (on != nullptr) {
      if (kv.second != "0" && kv.second != "1") {
        return absl::InvalidArgumentError(absl::StrCat("cuda: ", kv.first, "=0 or ", kv.first, "=1"));
      }
      *on = kv.second == "1";
    } else if (kv.first == "mem") {
      FERRY_ASSIGN_OR_RETURN(o.memory_bytes, ParseBytes(kv.second));
      if (o.memory_bytes == 0) return absl::InvalidArgumentError("cuda: mem must be more than 0 bytes");
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("cuda: unknown key '", kv.first, "' (want cuda[:N][,mem=SIZE][,poison=1][,int8=0][,int8_more=1][,graphs=0][,fuse=0])"));
    }
  }
  return o;
}

}  // namespace ferry::backend
