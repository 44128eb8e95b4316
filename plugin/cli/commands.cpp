#include "commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autosnap/errors.h"
#include "autosnap/serialize.h"
#include "autosnap/store.h"
#include "control_client.h"
#include "daemon/control_protocol.h"
#include "util/human_bytes.h"

namespace autosnap {
namespace cli {
namespace {

using nlohmann::json;
using util::human_bytes;

std::string default_socket(const std::string& directory, const std::string& socket) {
  return socket.empty() ? control::default_socket_path(directory) : socket;
}

// The newest committed snapshot (valid or not), or the newest valid one.
std::optional<SnapshotInfo> newest(const SnapshotStore& store, bool valid_only) {
  auto entries = store.list();
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->status == SnapshotStatus::kValid) return *it;
    if (!valid_only && it->status != SnapshotStatus::kInProgress &&
        it->status != SnapshotStatus::kQuarantined)
      return *it;
  }
  return std::nullopt;
}

// The committed entry of `step` when its directory exists: one manifest read, not the whole listing's.
std::optional<SnapshotInfo> find_step(const SnapshotStore& store, int64_t step) {
  std::string path;
  try {
    path = store.snapshot_path(step);
  } catch (const Error&) {  // a step no snapshot directory can have
    return std::nullopt;
  }
  if (!store.file_system().status(path).is_directory) return std::nullopt;
  return store.inspect(step);
}

// STEP when given (cheap checks only: read_shard checks what it reads), else
// the newest verified snapshot; says on stderr why there is none.
std::optional<Snapshot> chosen_snapshot(SnapshotStore& store, std::optional<int64_t> step) {
  if (!step) {
    auto latest = store.latest_valid();  // read-only: damaged ones are skipped, not quarantined
    if (!latest) std::cerr << "autosnap: no valid snapshot in " << store.directory() << std::endl;
    return latest;
  }
  const auto info = find_step(store, *step);
  if (!info) {
    std::cerr << "autosnap: no snapshot step " << *step << " in " << store.directory() << std::endl;
    return std::nullopt;
  }
  if (info->status != SnapshotStatus::kValid) {
    std::cerr << "autosnap: step " << info->step << ": " << to_string(info->status) << ": " << info->problem
              << std::endl;
    return std::nullopt;
  }
  return store.open(*info);
}

std::string shape_of(const at::Tensor& t) {
  std::ostringstream out;
  out << c10::toString(t.scalar_type()) << t.sizes();
  return out.str();
}

std::string scalar_text(const c10::IValue& v) {
  std::ostringstream out;
  if (v.isString()) {
    out << '"' << v.toStringRef() << '"';
  } else if (v.isDouble()) {
    out << std::setprecision(10) << v.toDouble();
  } else if (v.isTuple() || v.isList()) {
    const bool tuple = v.isTuple();
    const auto items = tuple ? v.toTupleRef().elements().vec() : v.toList().vec();
    out << (tuple ? "(" : "[");
    for (size_t i = 0; i < items.size() && i < 8; ++i) out << (i ? ", " : "") << scalar_text(items[i]);
    if (items.size() > 8) out << ", ... " << items.size() << " items";
    out << (tuple ? ")" : "]");
  } else if (v.isTensor()) {
    out << shape_of(v.toTensor());
  } else {
    out << v;
  }
  return out.str();
}

void describe_entry(const std::string& name, const std::string& kind, const c10::IValue& v) {
  std::cout << "  " << name << (kind.empty() ? "" : "  (" + kind + ")") << "\n";
  if (v.isTensor()) {
    std::cout << "      tensor " << shape_of(v.toTensor()) << "\n";
    return;
  }
  if (!v.isGenericDict()) {
    if (v.isList()) {
      std::cout << "      list of " << v.toListRef().size() << " item(s)\n";
    } else {
      std::cout << "      " << scalar_text(v) << "\n";
    }
    return;
  }
  const auto d = v.toGenericDict();
  if (d.contains("state") && d.contains("param_groups")) {  // Python-layout optimizer state
    const auto groups = d.at("param_groups").toListRef();
    std::cout << "      optimizer state for " << d.at("state").toGenericDict().size() << " parameter(s), "
              << groups.size() << " param group(s)\n";
    for (size_t g = 0; g < groups.size(); ++g) {
      std::cout << "      group " << g << ":";
      for (const auto& option : groups[g].toGenericDict()) {
        if (option.key().toStringRef() == "params") {
          std::cout << " params=" << option.value().toListRef().size();
        } else {
          std::cout << " " << option.key().toStringRef() << "=" << scalar_text(option.value());
        }
      }
      std::cout << "\n";
    }
    if (d.at("state").toGenericDict().size() > 0) {
      const auto first = d.at("state").toGenericDict().begin();
      std::cout << "      state[" << first->key() << "]:";
      for (const auto& item : first->value().toGenericDict()) {
        std::cout << " " << item.key().toStringRef() << "="
                  << (item.value().isTensor() ? shape_of(item.value().toTensor())
                                              : scalar_text(item.value()));
      }
      std::cout << "\n";
    }
    return;
  }
  if (name == "rng_state") {
    std::cout << "      cpu generator (" << d.at("cpu").toTensor().numel() << " bytes), "
              << d.at("cuda").toListRef().size() << " CUDA generator(s)\n";
    return;
  }
  size_t width = 0;
  for (const auto& item : d) width = std::max(width, c10::str(item.key()).size());
  for (const auto& item : d) {
    const std::string key = item.key().isString() ? item.key().toStringRef() : c10::str(item.key());
    std::cout << "      " << std::left << std::setw(static_cast<int>(width)) << key << std::right << "  "
              << (item.value().isTensor() ? shape_of(item.value().toTensor()) : scalar_text(item.value()))
              << "\n";
  }
}

}  // namespace

int list_snapshots(const std::string& directory, bool as_json, const std::string& memory_directory) {
  auto store = SnapshotStore::open_read_only(directory);
  const auto entries = store->list();
  if (!as_json) print_memory_tiers(directory, memory_directory);
  if (as_json) {
    json out = json::array();
    for (const auto& info : entries) {
      json item = {
          {"step", info.step}, {"name", info.name}, {"path", info.path}, {"status", to_string(info.status)}};
      if (info.manifest) {
        item["epoch"] = info.manifest->epoch;
        item["batch"] = info.manifest->batch;
        item["epoch_ended"] = info.manifest->epoch_ended;
        item["time"] = info.manifest->time;
        item["reason"] = info.manifest->reason;
        item["bytes"] = info.manifest->total_bytes();
        item["world_size"] = info.manifest->world_size;
      }
      if (!info.problem.empty()) item["problem"] = info.problem;
      out.push_back(item);
    }
    std::cout << out.dump(2) << std::endl;
    return kExitOk;
  }
  if (entries.empty()) {
    std::cout << "no snapshots in " << directory << std::endl;
    return kExitOk;
  }
  std::cout << std::left << std::setw(14) << "STEP" << std::setw(7) << "EPOCH" << std::setw(26) << "TIME"
            << std::setw(11) << "SIZE" << std::setw(7) << "RANKS" << std::setw(13) << "STATUS"
            << "REASON\n";
  for (const auto& info : entries) {
    const auto& m = info.manifest;
    std::cout << std::left << std::setw(14) << info.step << std::setw(7)
              << (m ? std::to_string(m->epoch) : "-") << std::setw(26) << (m ? m->time : "-") << std::setw(11)
              << (m ? human_bytes(m->total_bytes()) : "-") << std::setw(7)
              << (m ? std::to_string(m->world_size) : "-") << std::setw(13) << to_string(info.status)
              << (m ? m->reason : "") << "\n";
  }
  for (const auto& info : entries) {
    if (!info.problem.empty())
      std::cout << "step " << info.step << " (" << to_string(info.status) << "): " << info.problem << "\n";
  }
  std::cout << "(status checks manifests and sizes; `autosnap verify` checks every checksum)" << std::endl;
  return kExitOk;
}

int verify_snapshots(const std::string& directory, std::optional<int64_t> step, bool all) {
  auto store = SnapshotStore::open_read_only(directory);
  std::vector<SnapshotInfo> snapshots;
  if (all) {
    for (const auto& info : store->list()) {
      if (info.status != SnapshotStatus::kInProgress && info.status != SnapshotStatus::kQuarantined)
        snapshots.push_back(info);
    }
  } else if (step) {
    snapshots.push_back(store->inspect(*step));
  } else if (auto info = newest(*store, /*valid_only=*/false)) {
    snapshots.push_back(*info);
  }
  if (snapshots.empty()) {
    std::cerr << "autosnap: no committed snapshot in " << directory << std::endl;
    return kExitBad;
  }
  const bool terminal = ::isatty(STDERR_FILENO);
  int bad = 0, unreadable = 0;
  for (const auto& info : snapshots) {
    const int64_t s = info.step;
    auto progress = [&](uint64_t done, uint64_t total) {
      if (terminal && total > (32u << 20)) {
        std::cerr << "\rverifying step " << s << ": " << (100 * done / total) << "% (" << human_bytes(done)
                  << " of " << human_bytes(total) << ")   " << std::flush;
      }
    };
    const auto result = store->verify(info, progress);
    if (terminal) std::cerr << "\r\033[K" << std::flush;
    if (result.ok) {
      std::cout << "step " << s << ": OK, " << info.manifest->files.size() << " file(s), "
                << human_bytes(result.bytes_checked) << ", every checksum matches" << std::endl;
    } else if (result.io_error) {  // says nothing about the data: the disk or permissions failed
      ++unreadable;
      std::cout << "step " << s << ": UNREADABLE: " << result.problem << std::endl;
    } else {
      ++bad;
      std::cout << "step " << s << ": BAD: " << result.problem << std::endl;
    }
  }
  if (bad) return kExitBad;
  return unreadable ? kExitError : kExitOk;
}

int inspect_snapshot(const std::string& directory, std::optional<int64_t> step, int rank) {
  auto store = SnapshotStore::open_read_only(directory);
  const std::optional<Snapshot> snapshot = chosen_snapshot(*store, step);
  if (!snapshot) return kExitBad;
  const Manifest& m = snapshot->manifest();
  std::cout << "snapshot " << snapshot->path() << "\n"
            << "  step " << m.step << ", epoch " << m.epoch << " ("
            << (m.epoch_ended ? "ended" : "batch " + std::to_string(m.batch)) << "), " << m.time
            << ", reason \"" << m.reason << "\"\n"
            << "  world size " << m.world_size << ", format " << m.format_version << ", autosnap "
            << m.library_version << ", LibTorch " << m.libtorch_version << "\n"
            << "files:\n";
  for (const auto& file : m.files) {
    std::cout << "  " << std::left << std::setw(40) << file.name << std::right << std::setw(12)
              << human_bytes(file.size) << "  xxh3 " << std::hex << std::setw(16) << std::setfill('0')
              << file.xxh3 << std::dec << std::setfill(' ') << "\n";
  }
  const auto value = snapshot->read_shard(rank, c10::Device(c10::kCPU));  // checksum-verified
  std::cout << "entries of " << shard_file_name(rank) << ":\n";
  if (!value.isGenericDict()) {
    describe_entry("(value)", "", value);
    return kExitOk;
  }
  for (const auto& entry : value.toGenericDict()) {
    const std::string name = entry.key().isString() ? entry.key().toStringRef() : c10::str(entry.key());
    std::string kind;
    for (const auto& [entry_name, entry_kind] : m.entries) {
      if (entry_name == name) kind = entry_kind;
    }
    describe_entry(name, kind, entry.value());
  }
  return kExitOk;
}

int request_snapshot(const std::string& directory, const std::string& socket, const std::string& reason,
                     double timeout_seconds) {
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  const auto reply = control::send_request(default_socket(directory, socket),
                                           {{"cmd", "snapshot"}, {"reason", reason}}, timeout);
  if (!reply.value("ok", false)) {
    std::cerr << "autosnap: the snapshot failed: " << reply.value("error", std::string("unknown error"))
              << std::endl;
    return kExitBad;
  }
  std::cout << "snapshot committed: step " << reply["step"].get<int64_t>() << " at "
            << reply["path"].get<std::string>() << std::endl;
  return kExitOk;
}

namespace {

// Seconds since a manifest time ("2026-11-28T14:18:39.639Z"); nullopt when unreadable.
std::optional<double> age_seconds(const std::string& time) {
  std::tm parts{};
  double fraction = 0;
  if (std::sscanf(time.c_str(), "%d-%d-%dT%d:%d:%d", &parts.tm_year, &parts.tm_mon, &parts.tm_mday,
                  &parts.tm_hour, &parts.tm_min, &parts.tm_sec) != 6)
    return std::nullopt;
  const size_t dot = time.find('.');
  if (dot != std::string::npos) fraction = std::atof(("0" + time.substr(dot, time.find('Z') - dot)).c_str());
  parts.tm_year -= 1900;
  parts.tm_mon -= 1;
  const auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  return now - (static_cast<double>(::timegm(&parts)) + fraction);
}

std::string age_text(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  if (s < 60) return std::to_string(s) + " s ago";
  if (s < 3600) return std::to_string(s / 60) + " min " + std::to_string(s % 60) + " s ago";
  return std::to_string(s / 3600) + " h " + std::to_string(s % 3600 / 60) + " min ago";
}

}  // namespace

int show_status(const std::string& directory, const std::string& socket, bool as_json,
                const std::string& memory_directory) {
  json job = nullptr;
  std::string not_running;
  try {
    job = control::send_request(default_socket(directory, socket), {{"cmd", "status"}},
                                std::chrono::seconds(10));
  } catch (const control::ClientError& e) {
    if (e.kind() != control::ClientError::Kind::kNotRunning) throw;
    not_running = e.what();
  }
  std::optional<SnapshotInfo> latest;
  if (default_file_system().status(directory).is_directory)
    latest = newest(*SnapshotStore::open_read_only(directory), true);
  if (as_json) {
    json out = {{"running", !job.is_null()}, {"job", job}};
    out["memory_tiers"] = memory_tiers_json(directory, memory_directory);
    out["newest_valid"] = latest ? json{{"step", latest->step},
                                        {"path", latest->path},
                                        {"reason", latest->manifest->reason},
                                        {"time", latest->manifest->time}}
                                 : json(nullptr);
    if (latest) {
      const auto age = age_seconds(latest->manifest->time);
      out["newest_valid"]["age_seconds"] = age ? json(*age) : json(nullptr);
    }
    std::cout << out.dump(2) << std::endl;
    return job.is_null() ? kExitNotRunning : kExitOk;
  }
  if (job.is_null()) {
    std::cout << "job: not running (" << not_running << ")\n";
  } else {
    std::cout << "job: running (pid " << job["pid"] << "), last completed step "
              << (job["step"].is_null() ? std::string("none yet") : job["step"].dump()) << ", "
              << job["in_flight"] << " snapshot(s) being written, " << job["committed"]
              << " committed by this run" << (job["stopping"].get<bool>() ? ", stopping" : "") << "\n";
    if (!job["last_committed"].is_null()) {
      std::cout << "     last committed: step " << job["last_committed"]["step"] << " at "
                << job["last_committed"]["path"].get<std::string>() << "\n";
    }
    const int64_t failing = job.value("consecutive_failures", int64_t{0});
    if (failing > 0) {
      std::cout << "     FAILING: the last " << failing << " snapshot(s) in a row failed; the last failure: "
                << job.value("last_failure", json("")).get<std::string>() << "\n";
    }
    if (job.contains("lost") && !job["lost"].is_null()) {
      std::cout << "     LOST RANK: " << job["lost"].get<std::string>() << "\n";
    }
    if (job.contains("memory") && !job["memory"].is_null()) {
      const json& memory = job["memory"];
      std::cout << "     memory tier: "
                << (memory["off"].is_null() ? std::string("on")
                                            : "OFF (" + memory["off"].get<std::string>() + ")")
                << ", last committed step "
                << (memory["last_committed"].is_null() ? std::string("none yet")
                                                       : memory["last_committed"].dump())
                << ", " << memory["committed"] << " committed, " << memory["skipped"]
                << " skipped while busy\n";
      if (memory.contains("replicas")) {
        const json& replicas = memory["replicas"];
        std::cout << "     memory replicas: "
                  << (replicas["off"].is_null() ? "to " + replicas["to"].get<std::string>() + ", " +
                                                      replicas["sent"].dump() + " sent"
                                                : "OFF (" + replicas["off"].get<std::string>() + ")")
                  << "\n";
      }
    }
  }
  print_memory_tiers(directory, memory_directory);
  if (latest) {
    const auto age = age_seconds(latest->manifest->time);
    std::cout << "newest valid snapshot: step " << latest->step << " (" << latest->manifest->reason << ", "
              << latest->manifest->time << (age ? ", " + age_text(*age) : std::string()) << ", "
              << human_bytes(latest->manifest->total_bytes()) << ")\n"
              << "(manifest and sizes checked; `autosnap verify` checks every checksum)" << std::endl;
  } else {
    std::cout << "newest valid snapshot: none" << std::endl;
  }
  return job.is_null() ? kExitNotRunning : kExitOk;
}

int print_latest(const std::string& directory, bool fast) {
  auto store = SnapshotStore::open_read_only(directory);
  std::optional<int64_t> latest;
  if (fast) {
    if (const auto info = newest(*store, /*valid_only=*/true)) latest = info->step;
  } else if (const auto snapshot = store->latest_valid()) {  // read-only: skips damaged ones
    latest = snapshot->step();
  }
  if (!latest) {
    std::cerr << "autosnap: no valid snapshot in " << directory << std::endl;
    return kExitBad;
  }
  std::cout << *latest << std::endl;
  return kExitOk;
}

int prune_snapshots(const std::string& directory, int64_t keep_last, int64_t keep_every_steps, bool dry_run) {
  const RetentionRule rule{keep_last, keep_every_steps};
  std::unique_ptr<SnapshotStore> store;
  if (dry_run) {
    store = SnapshotStore::open_read_only(directory);
  } else {
    try {
      store = SnapshotStore::open_for_writing(directory);
    } catch (const LockedError& e) {
      std::cerr << "autosnap: " << e.what()
                << "; prune refuses while a job writes there (its retention applies)" << std::endl;
      return kExitError;
    }
  }
  const auto steps = store->prune(rule, dry_run);
  if (steps.empty()) std::cout << "nothing to delete" << std::endl;
  for (int64_t s : steps) std::cout << (dry_run ? "would delete step " : "deleted step ") << s << "\n";
  std::cout << std::flush;
  return kExitOk;
}

int export_snapshot(const std::string& directory, std::optional<int64_t> step, const std::string& out,
                    int rank) {
  auto store = SnapshotStore::open_read_only(directory);
  const std::optional<Snapshot> snapshot = chosen_snapshot(*store, step);
  if (!snapshot) return kExitBad;
  const auto value = snapshot->read_shard(rank, c10::Device(c10::kCPU));  // checksum-verified
  save(value, out);
  std::cout << "exported step " << snapshot->step() << " (rank " << rank << ") to " << out;
  if (value.isGenericDict()) {
    std::string keys;
    for (const auto& entry : value.toGenericDict())
      keys += (keys.empty() ? "" : ", ") + c10::str(entry.key());
    std::cout << ": " << keys;
  }
  std::cout << std::endl;
  return kExitOk;
}

}  // namespace cli
}  // namespace autosnap
