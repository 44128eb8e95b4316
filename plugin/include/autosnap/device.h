#pragma once

/// Devices to restore onto (`map_location`).

#include <c10/core/Device.h>

#include <string>

#include "autosnap/export.h"

namespace autosnap {

/// Parses "cpu", "cuda" or "cuda:N" and checks that the device exists in this
/// process. A CUDA device on a CPU-only LibTorch (or with no GPU visible), or
/// an index past the device count, throws autosnap::Error with a message that
/// says which. `what` names the setting in that message (e.g. "map_location").
AUTOSNAP_API c10::Device resolve_device(const std::string& spec, const std::string& what = "device");

/// Checks that `device` is usable here; throws autosnap::Error otherwise.
AUTOSNAP_API void check_device_available(const c10::Device& device, const std::string& what = "device");

}  // namespace autosnap
