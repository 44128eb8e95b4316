#include "state/saved_dict.h"

#include "autosnap/errors.h"

namespace autosnap {
namespace state {

SavedDict::SavedDict(const c10::IValue& value, std::string what) : what_(std::move(what)) {
  if (!value.isGenericDict()) fail(std::string("expected a dict, got ") + value.tagKind());
  dict_ = value.toGenericDict();
}

void SavedDict::fail(const std::string& problem) const { throw StateMismatch(what_ + ": " + problem); }

const c10::IValue& SavedDict::get(const std::string& key) const {
  auto it = dict_.find(key);
  if (it == dict_.end()) fail("'" + key + "' is missing");
  return it->value();
}

int64_t SavedDict::integer(const std::string& key) const {
  const c10::IValue& v = get(key);
  if (!v.isInt()) fail("'" + key + "' should be an int, got " + v.tagKind());
  return v.toInt();
}

bool SavedDict::boolean(const std::string& key) const {
  const c10::IValue& v = get(key);
  if (!v.isBool()) fail("'" + key + "' should be a bool, got " + v.tagKind());
  return v.toBool();
}

}  // namespace state
}  // namespace autosnap
