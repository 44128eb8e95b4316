#include "daemon/memory_replicas.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "autosnap/errors.h"
#include "format/checksum.h"
#include "store/entry_name.h"
#include "store/snapshot_writer.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {

using util::log;
namespace {

void put_u64(std::string& out, uint64_t value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

// Reads the packed message front to back; a short or inconsistent one is an Error naming it.
class PackedReader {
 public:
  explicit PackedReader(const std::string& packed) : packed_(packed) {}
  uint64_t u64() {
    need(sizeof(uint64_t));
    uint64_t value = 0;
    std::memcpy(&value, packed_.data() + at_, sizeof value);
    at_ += sizeof value;
    return value;
  }
  std::string_view bytes(uint64_t size) {
    need(size);
    const std::string_view view(packed_.data() + at_, size);
    at_ += size;
    return view;
  }
  bool done() const { return at_ == packed_.size(); }

 private:
  void need(uint64_t size) const {
    if (size > packed_.size() - at_)
      throw Error("a replica message is cut short (" + std::to_string(packed_.size()) + " bytes)");
  }
  const std::string& packed_;
  size_t at_ = 0;
};

}  // namespace

ReplicaPlacement ReplicaPlacement::ring(const std::vector<int>& nodes, int replicas) {
  const size_t world = nodes.size();
  std::vector<std::vector<int>> members;  // by node: its ranks, ascending
  for (size_t r = 0; r < world; ++r) {
    const auto node = static_cast<size_t>(nodes[r]);
    if (members.size() <= node) members.resize(node + 1);
    members[node].push_back(static_cast<int>(r));
  }
  ReplicaPlacement placement;
  placement.holders.resize(world);
  placement.held.resize(world);
  const int count = static_cast<int>(members.size());
  const int copies = std::min(replicas, count - 1);
  for (size_t r = 0; r < world; ++r) {
    const int node = nodes[r];
    const auto& mine = members[static_cast<size_t>(node)];
    const size_t index =
        static_cast<size_t>(std::find(mine.begin(), mine.end(), static_cast<int>(r)) - mine.begin());
    for (int k = 1; k <= copies; ++k) {
      const auto& there = members[static_cast<size_t>((node + k) % count)];
      if (there.empty()) continue;
      const int holder = there[index % there.size()];
      placement.holders[r].push_back(holder);
      placement.held[static_cast<size_t>(holder)].push_back(static_cast<int>(r));
    }
  }
  for (auto& held : placement.held) std::sort(held.begin(), held.end());
  return placement;
}

std::string pack_snapshot(const SnapshotStore& store, int64_t step) {
  FileSystem& fs = store.file_system();
  const Snapshot snapshot = store.open(step);
  const std::string directory = store.snapshot_path(step);
  std::vector<std::pair<std::string, uint64_t>> files;
  for (const auto& file : snapshot.manifest().files) files.emplace_back(file.name, file.size);
  files.emplace_back(store::kManifestName,
                     fs.status(join_path(directory, store::kManifestName)).size);  // last
  uint64_t total = 2 * sizeof(uint64_t);
  for (const auto& [name, size] : files) total += 2 * sizeof(uint64_t) + name.size() + size;
  std::string packed;
  packed.reserve(total);
  put_u64(packed, static_cast<uint64_t>(step));
  put_u64(packed, files.size());
  for (const auto& [name, size] : files) {
    put_u64(packed, name.size());
    packed += name;
    put_u64(packed, size);
    const size_t at = packed.size();
    packed.resize(at + size);
    fs.open_for_reading(join_path(directory, name))->read_exact(0, packed.data() + at, size);
  }
  return packed;
}

int64_t commit_packed_snapshot(const std::string& packed, SnapshotStore& store) {
  PackedReader in(packed);
  const auto step = static_cast<int64_t>(in.u64());
  const uint64_t count = in.u64();
  std::vector<std::pair<std::string, std::string_view>> files;
  for (uint64_t i = 0; i < count; ++i) {
    std::string name(in.bytes(in.u64()));
    files.emplace_back(std::move(name), in.bytes(in.u64()));
  }
  if (!in.done() || files.empty() || files.back().first != store::kManifestName)
    throw Error("a malformed replica message (step " + std::to_string(step) + ")");
  const std::string where = "the replica of step " + std::to_string(step);
  Manifest manifest = Manifest::parse(std::string(files.back().second), where);
  if (manifest.step != step)
    throw CorruptSnapshot(where + " holds a manifest of step " + std::to_string(manifest.step));
  files.pop_back();

  if (store.file_system().status(store.snapshot_path(step)).exists) store.remove(step);
  auto writer = SnapshotWriter::begin(store, step);
  for (const auto& [name, bytes] : files) {
    const auto listed = std::find_if(manifest.files.begin(), manifest.files.end(),
                                     [&, &name = name](const ManifestFile& f) { return f.name == name; });
    if (listed == manifest.files.end())
      throw CorruptSnapshot(where + " holds " + name + ", which its manifest lacks");
    const ManifestFile written = writer->write_file(
        name, [&, &bytes = bytes](WritableFile& out) { out.append(bytes.data(), bytes.size()); });
    if (written.size != listed->size || written.xxh3 != listed->xxh3) {
      throw CorruptSnapshot(where + ": " + name + " does not match its manifest (" +
                            std::to_string(written.size) + " bytes, xxh3 " + format::to_hex(written.xxh3) +
                            "; expected " + std::to_string(listed->size) + " bytes, xxh3 " +
                            format::to_hex(listed->xxh3) + ")");
    }
  }
  if (writer->files().size() != manifest.files.size())
    throw CorruptSnapshot(where + " lacks files its manifest lists");
  writer->commit(std::move(manifest));
  return step;
}

MemoryReplicas::MemoryReplicas(MemoryTier& tier, Coordinator& coordinator, int replicas, int64_t keep_last)
    : tier_(tier),
      coordinator_(coordinator),
      keep_last_(keep_last),
      placement_(ReplicaPlacement::ring(coordinator.nodes(), replicas)) {
  const auto me = static_cast<size_t>(coordinator_.rank());
  // Replicas this rank held in an earlier run stay offered to a restore, whatever the placement is now.
  const std::string directory = join_path(tier_.path(), MemoryTier::kReplicasDirectory);
  FileSystem& fs = tier_.store().file_system();
  if (fs.status(directory).is_directory) {
    for (const auto& entry : fs.list_directory(directory)) {
      int rank = -1;
      if (entry.is_directory && std::sscanf(entry.name.c_str(), "rank-%d", &rank) == 1 && rank >= 0)
        store_of(rank);
    }
  }
  for (int rank : placement_.held[me]) store_of(rank);
  tier_.set_replicas_held(static_cast<int>(placement_.held[me].size()));
  if (placement_.holders[me].empty()) {
    off_because_ = "every rank of this job runs on one node, so there is no other node to hold a copy";
    if (me == 0)
      log()->warn("memory.replicas: {}, but {}: each node keeps its own memory snapshots only", replicas,
                  off_because_);
  } else if (me == 0) {
    log()->info("memory tier replicas: each rank's memory snapshots are copied to {} rank(s) on other nodes",
                placement_.holders[me].size());
  }
}

std::string MemoryReplicas::off_because() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return off_because_;
}

std::string MemoryReplicas::holders_text() const {
  std::string text;
  for (int holder : placement_.holders[static_cast<size_t>(coordinator_.rank())])
    text += (text.empty() ? "" : ", ") + coordinator_.where(holder);
  return text;
}

SnapshotStore& MemoryReplicas::store_of(int rank) {
  auto& store = held_[rank];
  if (!store) {
    const std::string directory =
        join_path(join_path(tier_.path(), MemoryTier::kReplicasDirectory), MemoryTier::rank_directory(rank));
    create_directories(tier_.store().file_system(), directory);
    store = SnapshotStore::open_for_writing(directory, /*fsync=*/false, tier_.store().file_system());
  }
  return *store;
}

void MemoryReplicas::turn_off(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!off_because_.empty()) return;
    off_because_ = why;
  }
  log()->warn(
      "memory tier replicas are off for the rest of this run: {}; memory snapshots stay on this node only (a "
      "lost node falls back to the disk)",
      why);
}

void MemoryReplicas::after_memory_snapshot(int64_t step, bool committed) {
  if (!off_because().empty()) return;
  const auto me = static_cast<size_t>(coordinator_.rank());
  const std::vector<int>& theirs = placement_.held[me];
  try {
    const std::string packed = committed ? pack_snapshot(tier_.store(), step) : std::string();
    std::vector<std::pair<int, std::string_view>> sends;
    for (int holder : placement_.holders[me]) sends.emplace_back(holder, packed);
    const auto received = coordinator_.send_receive(sends, theirs, Channel::kReplica);
    for (size_t i = 0; i < received.size(); ++i) {
      if (received[i].empty()) continue;  // that rank's memory snapshot of this step failed
      SnapshotStore& store = store_of(theirs[i]);
      const int64_t newest = commit_packed_snapshot(received[i], store);
      store.prune(RetentionRule{keep_last_, 0}, /*dry_run=*/false, newest);
    }
    if (committed) sent_.fetch_add(1);
  } catch (const std::exception& e) {
    turn_off("sending or keeping the replicas of step " + std::to_string(step) + " failed: " + e.what());
  }
}

std::map<int, std::vector<int64_t>> MemoryReplicas::held_steps() {
  std::map<int, std::vector<int64_t>> steps;
  for (const auto& [rank, store] : held_) {
    try {
      for (const auto& info : store->list()) {
        if (info.status == SnapshotStatus::kValid &&
            MemoryTier::taken_by(*info.manifest, rank, coordinator_.world_size()))
          steps[rank].push_back(info.step);
      }
    } catch (const std::exception& e) {
      log()->warn("cannot list the replicas of rank {} held here ({}): not offered to the restore", rank,
                  e.what());
      steps.erase(rank);
    }
  }
  return steps;
}

std::string MemoryReplicas::fetch(int64_t step, const std::vector<ReplicaFetch>& fetches) {
  const int me = coordinator_.rank();
  std::vector<std::string> packed;  // what this rank sends, one per receiver
  std::vector<int> to, receive_from;
  for (const auto& f : fetches) {
    if (f.holder == me) {
      to.push_back(f.rank);
      try {
        packed.push_back(pack_snapshot(store_of(f.rank), step));
      } catch (const std::exception& e) {  // the receiver names the failure
        log()->warn("cannot read the replica of step {} of {} held here: {}", step,
                    coordinator_.where(f.rank), e.what());
        packed.emplace_back();
      }
    }
    if (f.rank == me) receive_from.push_back(f.holder);
  }
  std::vector<std::pair<int, std::string_view>> sends;
  for (size_t i = 0; i < to.size(); ++i) sends.emplace_back(to[i], packed[i]);
  if (sends.empty() && receive_from.empty()) return "";
  try {
    const auto received = coordinator_.send_receive(sends, receive_from, Channel::kReplica);
    for (size_t i = 0; i < received.size(); ++i) {
      const std::string from = coordinator_.where(receive_from[i]);
      if (received[i].empty()) return from + " could not read its replica of step " + std::to_string(step);
      try {
        commit_packed_snapshot(received[i], tier_.store());
      } catch (const std::exception& e) {
        return "the replica of step " + std::to_string(step) + " from " + from + " is unusable: " + e.what();
      }
      log()->info("{} lacked its memory snapshot of step {}: got it from the replica on {} ({})",
                  coordinator_.where(me), step, from, util::human_bytes(received[i].size()));
    }
  } catch (const std::exception& e) {
    return "fetching replicas of step " + std::to_string(step) + " failed: " + e.what();
  }
  return "";
}

void MemoryReplicas::drop_newer_than(int64_t step) {
  for (const auto& [rank, store] : held_) MemoryTier::drop_newer_than(*store, step);
}

}  // namespace daemon
}  // namespace autosnap
