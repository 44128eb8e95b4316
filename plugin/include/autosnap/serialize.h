#pragma once

/// Save and load values like Python's torch.save / torch.load, atomically.
///
/// Files are in PyTorch's own torch.save format: Python's `torch.load` reads
/// what `save` writes, and `load` reads what Python's `torch.save` wrote.

#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include <string>

#include "autosnap/export.h"
#include "autosnap/fs.h"

namespace autosnap {

/// Saves `value` to `path`: a tensor; a list, tuple or string/int-keyed dict;
/// nested containers; int, double, bool, string, None. Tensors that share a
/// storage (views) still share it after loading, as with torch.save; save a
/// `clone()` to break the sharing.
///
/// Atomic: the bytes go to a temp file in the same directory, which is
/// fsynced and renamed over `path`, and the directory is fsynced. After a crash
/// `path` holds the old file or the new one, never a partial one.
/// Throws autosnap::Error for unsupported values, IoError for I/O failures.
AUTOSNAP_API void save(const c10::IValue& value, const std::string& path,
                       FileSystem& fs = default_file_system());

/// Loads a file written by `save` or by Python's torch.save (PyTorch >= 1.6
/// zip format). Tensors are placed on `device` (Python's `map_location`).
/// Only tensors, containers and plain values are built: nothing in the file
/// is executed. Throws CorruptSnapshot for damaged or unsupported files.
AUTOSNAP_API c10::IValue load(const std::string& path, const c10::Device& device,
                              FileSystem& fs = default_file_system());

/// As above with `map_location` "cpu", "cuda" or "cuda:N". A CUDA location on
/// a CPU-only build throws autosnap::Error before the file is read.
AUTOSNAP_API c10::IValue load(const std::string& path, const std::string& map_location = "cpu",
                              FileSystem& fs = default_file_system());

}  // namespace autosnap
