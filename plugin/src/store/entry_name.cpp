#include "store/entry_name.h"

namespace autosnap {
namespace store {

std::optional<EntryName> parse_entry_name(const std::string& name) {
  constexpr size_t kStepDigits = 12;
  if (name.size() < 5 + kStepDigits || name.compare(0, 5, "step-") != 0) return std::nullopt;
  int64_t step = 0;
  for (size_t i = 0; i < kStepDigits; ++i) {
    const char c = name[5 + i];
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  const std::string suffix = name.substr(5 + kStepDigits);
  if (suffix.empty()) return EntryName{step, EntryKind::kCommitted};
  if (suffix.rfind(".tmp-", 0) == 0 && suffix.size() > 5) return EntryName{step, EntryKind::kTmp};
  if (suffix.rfind(".corrupt-", 0) == 0 && suffix.size() > 9) return EntryName{step, EntryKind::kQuarantined};
  return std::nullopt;
}

}  // namespace store
}  // namespace autosnap
