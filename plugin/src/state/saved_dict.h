#pragma once

// A dict read back from a snapshot or a torch.save file, read key by key.
// Every saved state that is a dict (optimizer state, sampler position, RNG
// state) is read through it, so each gives the same kind of error: a
// StateMismatch "<what>: <problem>" that names the key and what was expected.

#include <ATen/core/Dict.h>
#include <ATen/core/ivalue.h>

#include <cstdint>
#include <string>

namespace autosnap {
namespace state {

class SavedDict {
 public:
  /// `what` names the state in errors, e.g. "sampler state".
  SavedDict(const c10::IValue& value, std::string what);

  [[noreturn]] void fail(const std::string& problem) const;
  bool has(const std::string& key) const { return dict_.contains(key); }
  /// The value of `key`; "'key' is missing" when absent.
  const c10::IValue& get(const std::string& key) const;
  /// An int entry; "'key' should be an int, got <kind>" otherwise.
  int64_t integer(const std::string& key) const;
  /// A bool entry; "'key' should be a bool, got <kind>" otherwise.
  bool boolean(const std::string& key) const;
  const std::string& what() const { return what_; }

 private:
  c10::impl::GenericDict dict_{c10::AnyType::get(), c10::AnyType::get()};
  std::string what_;
};

}  // namespace state
}  // namespace autosnap
