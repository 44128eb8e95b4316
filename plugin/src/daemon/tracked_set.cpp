#include "daemon/tracked_set.h"

#include <algorithm>
#include <cctype>

#include "autosnap/errors.h"
#include "daemon/staging.h"
#include "state/rng_state.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {
namespace {

bool valid_track_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '_' || c == '-' || c == '.'; });
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

void TrackedSet::add(const std::string& name, std::unique_ptr<TrackedState> state) {
  if (!valid_track_name(name)) {
    throw Error("cannot track '" + name + "': names may use letters, digits, '_', '-' and '.' only");
  }
  if (name == kRngEntry)
    throw Error("cannot track '" + name + "': the name is reserved for the random generator state");
  for (const auto& [existing, _] : entries_) {
    if (existing == name) throw Error("cannot track '" + name + "': the name is already tracked");
  }
  entries_.emplace_back(name, std::move(state));
}

void TrackedSet::step_ended() const {
  for (const auto& [name, state] : entries_) state->step_ended();
}

void TrackedSet::epoch_ended() const {
  for (const auto& [name, state] : entries_) state->epoch_ended();
}

bool TrackedSet::tracks_data_position() const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [](const auto& entry) { return entry.second->is_data_position(); });
}

c10::impl::GenericDict TrackedSet::capture() const {
  c10::impl::GenericDict shard(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [name, state] : entries_) shard.insert(name, state->capture());
  if (capture_rng_) shard.insert(kRngEntry, state::capture_rng_state());
  return shard;
}

void TrackedSet::step_only_storages(const c10::impl::GenericDict& shard,
                                    std::unordered_set<const void*>& out) const {
  for (const auto& [name, state] : entries_) state->step_only_storages(shard.at(name), out);
}

int64_t TrackedSet::step_only_generation() const {
  // Each state's generation only grows, and entries are only added: the sum changes with any of them.
  int64_t generation = static_cast<int64_t>(entries_.size());
  for (const auto& [name, state] : entries_) generation += state->step_only_generation();
  return generation;
}

void TrackedSet::stable_containers(const c10::impl::GenericDict& shard, StableContainers& out) const {
  for (const auto& [name, state] : entries_) state->stable_containers(shard.at(name), out);
}

std::vector<std::pair<std::string, std::string>> TrackedSet::manifest_entries() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, state] : entries_) out.emplace_back(name, state->kind());
  if (capture_rng_) out.emplace_back(kRngEntry, "random generator states");
  return out;
}

void TrackedSet::write_extra_files(const c10::impl::GenericDict& staged, SnapshotWriter& writer,
                                   int rank) const {
  for (const auto& [name, state] : entries_) state->write_extra_files(name, staged.at(name), writer, rank);
}

std::function<void()> TrackedSet::prepare(const c10::IValue& value, bool strict,
                                          const std::string& origin) const {
  if (!value.isGenericDict())
    throw StateMismatch("snapshot " + origin + " does not hold a dict of tracked objects");
  const auto shard = value.toGenericDict();
  std::vector<std::string> missing, untracked;
  for (const auto& [name, state] : entries_) {
    if (!shard.contains(name)) missing.push_back(name);
  }
  for (const auto& entry : shard) {
    const std::string key = entry.key().isString() ? entry.key().toStringRef() : c10::str(entry.key());
    const bool known = key == kRngEntry || std::any_of(entries_.begin(), entries_.end(),
                                                       [&](const auto& t) { return t.first == key; });
    if (!known) untracked.push_back(key);
  }
  if (!missing.empty() || !untracked.empty()) {
    std::string problem = "snapshot " + origin + " does not match what is tracked:";
    if (!missing.empty()) problem += " tracked but not in the snapshot: " + join(missing) + ";";
    if (!untracked.empty()) problem += " in the snapshot but not tracked: " + join(untracked) + ";";
    if (strict) throw StateMismatch(problem + " (set restore.strict: false to restore what matches)");
    util::log()->warn("{} restoring what matches (restore.strict: false)", problem);
  }
  // Check everything first; change the live objects only when all of it fits.
  std::vector<state::Commit> commits;
  for (const auto& [name, state] : entries_) {
    if (!shard.contains(name)) continue;
    try {
      commits.push_back(state->prepare_restore(shard.at(name), strict, name));
    } catch (const StateMismatch& e) {
      throw StateMismatch("snapshot " + origin + ": " + e.what());  // which snapshot, not only which entry
    }
  }
  if (capture_rng_ && shard.contains(kRngEntry))
    commits.push_back(state::prepare_rng_restore(shard.at(kRngEntry)));
  return [commits = std::move(commits)] {
    for (const auto& commit : commits) commit();
  };
}

}  // namespace daemon
}  // namespace autosnap
