#pragma once

/// Building Python-like values for save(): LibTorch's heterogeneous containers
/// need runtime types, so these helpers make them as Python would.
///
///   autosnap::save(autosnap::dict({{"epoch", 3}, {"loss", 0.25},
///                                  {"model_state_dict", autosnap::state_dict(*model)}}),
///                  "checkpoint.pt");

#include <ATen/core/ivalue.h>

#include <initializer_list>
#include <string>
#include <utility>

#include "autosnap/export.h"

namespace autosnap {

using GenericDict = c10::impl::GenericDict;
using GenericList = c10::impl::GenericList;

/// A dict with string keys and values of any type, like Python's {"k": v}.
AUTOSNAP_API GenericDict dict(std::initializer_list<std::pair<std::string, c10::IValue>> items = {});
/// A list of values of any type, like Python's [a, b].
AUTOSNAP_API GenericList list(std::initializer_list<c10::IValue> items = {});
/// A tuple, like Python's (a, b).
AUTOSNAP_API c10::IValue tuple(std::initializer_list<c10::IValue> items);

/// `value[key]` of a str-keyed dict; throws autosnap::Error naming the key
/// (and the keys present) when it is missing or `value` is not a dict.
AUTOSNAP_API const c10::IValue& dict_at(const c10::IValue& value, const std::string& key);
/// Removes `key` from a str-keyed dict and returns its value (errors as
/// dict_at). Gives up part of a loaded checkpoint, so that its tensors are
/// installed instead of copied:
///   autosnap::load_state_dict(model, autosnap::take(loaded, "model_state_dict"));
AUTOSNAP_API c10::IValue take(c10::IValue& value, const std::string& key);

}  // namespace autosnap
