#include "autosnap/values.h"

#include "autosnap/errors.h"

namespace autosnap {

GenericDict dict(std::initializer_list<std::pair<std::string, c10::IValue>> items) {
  GenericDict d(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [key, value] : items) d.insert_or_assign(key, value);
  return d;
}

GenericList list(std::initializer_list<c10::IValue> items) {
  GenericList l(c10::AnyType::get());
  for (const auto& item : items) l.push_back(item);
  return l;
}

c10::IValue tuple(std::initializer_list<c10::IValue> items) {
  return c10::ivalue::Tuple::create(std::vector<c10::IValue>(items));
}

const c10::IValue& dict_at(const c10::IValue& value, const std::string& key) {
  if (!value.isGenericDict()) throw Error("expected a dict holding '" + key + "', got " + value.tagKind());
  const auto d = value.toGenericDict();
  auto it = d.find(key);
  if (it == d.end()) {
    std::string present;
    for (const auto& entry : d) {
      if (!entry.key().isString()) continue;
      present += (present.empty() ? "" : ", ") + entry.key().toStringRef();
    }
    throw Error("key '" + key + "' is missing (present: " + (present.empty() ? "none" : present) + ")");
  }
  return it->value();
}

c10::IValue take(c10::IValue& value, const std::string& key) {
  c10::IValue taken = dict_at(value, key);
  static_cast<void>(value.toGenericDict().erase(key));
  return taken;
}

}  // namespace autosnap
