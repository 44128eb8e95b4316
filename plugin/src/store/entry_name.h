#pragma once

// The names of a store's entries: "step-<12 digits>" for a committed
// snapshot, with ".tmp-<id>" while it is written and ".corrupt-<n>" once
// quarantined. Read by the store and its writer.

#include <cstdint>
#include <optional>
#include <string>

namespace autosnap {
namespace store {

enum class EntryKind { kCommitted, kTmp, kQuarantined };

struct EntryName {
  int64_t step;
  EntryKind kind;
};

/// Nullopt for any other name (other files of the directory are ignored).
std::optional<EntryName> parse_entry_name(const std::string& name);

constexpr const char* kManifestName = "manifest.yaml";

}  // namespace store
}  // namespace autosnap
