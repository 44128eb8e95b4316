#pragma once

// Replacing a file atomically: write a temp file in the same directory
// (O_EXCL, flock'ed while it is written), fsync it, rename it over the target,
// fsync the directory. A crash at any moment leaves the old file or the new
// one, never a partial one. Temp files left by crashed writers are removed by
// the next write into the same directory (the flock tells live from dead).

#include <functional>
#include <string>

#include "autosnap/fs.h"

namespace autosnap {

/// Writes `path` through `write` and commits it atomically. With `durable`
/// false the fsyncs are skipped (the rename is still atomic).
void write_file_atomically(FileSystem& fs, const std::string& path,
                           const std::function<void(WritableFile&)>& write, bool durable = true);

/// Removes temp files of crashed writers from `directory`; returns how many.
size_t remove_stale_temp_files(FileSystem& fs, const std::string& directory);

/// True for names write_file_atomically uses for its temp files.
bool is_temp_file_name(const std::string& name);

}  // namespace autosnap
