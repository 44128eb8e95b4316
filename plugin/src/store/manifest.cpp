#include "autosnap/manifest.h"

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <unordered_set>

#include "autosnap/errors.h"
#include "format/checksum.h"

namespace autosnap {
namespace {

template <typename T>
T field(const YAML::Node& node, const char* key, const std::string& source) {
  const YAML::Node value = node[key];
  if (!value) throw CorruptSnapshot("manifest '" + source + "': field '" + key + "' is missing");
  try {
    return value.as<T>();
  } catch (const YAML::Exception&) {
    throw CorruptSnapshot("manifest '" + source + "': field '" + key + "' has the wrong type");
  }
}

// An optional mapping of names to strings, in file order.
std::vector<std::pair<std::string, std::string>> name_map(const YAML::Node& root, const char* key,
                                                          const std::string& source) {
  std::vector<std::pair<std::string, std::string>> out;
  const YAML::Node map = root[key];
  if (!map) return out;
  if (!map.IsMap()) throw CorruptSnapshot("manifest '" + source + "': '" + key + "' must be a mapping");
  for (auto it = map.begin(); it != map.end(); ++it) {
    try {
      out.emplace_back(it->first.as<std::string>(), it->second.as<std::string>());
    } catch (const YAML::Exception&) {
      throw CorruptSnapshot("manifest '" + source + "': '" + key + "' must map names to strings");
    }
  }
  return out;
}

}  // namespace

uint64_t Manifest::total_bytes() const {
  uint64_t total = 0;
  for (const auto& file : files) total += file.size;
  return total;
}

const ManifestFile* Manifest::find(const std::string& name) const {
  for (const auto& file : files) {
    if (file.name == name) return &file;
  }
  return nullptr;
}

std::string Manifest::to_yaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "format_version" << YAML::Value << format_version;
  out << YAML::Key << "step" << YAML::Value << step;
  out << YAML::Key << "epoch" << YAML::Value << epoch;
  out << YAML::Key << "batch" << YAML::Value << batch;
  out << YAML::Key << "epoch_ended" << YAML::Value << epoch_ended;
  out << YAML::Key << "time" << YAML::Value << time;
  out << YAML::Key << "reason" << YAML::Value << YAML::DoubleQuoted << reason;
  out << YAML::Key << "world_size" << YAML::Value << world_size;
  out << YAML::Key << "library_version" << YAML::Value << YAML::DoubleQuoted << library_version;
  out << YAML::Key << "libtorch_version" << YAML::Value << YAML::DoubleQuoted << libtorch_version;
  out << YAML::Key << "files" << YAML::Value << YAML::BeginSeq;
  for (const auto& file : files) {
    out << YAML::BeginMap;
    out << YAML::Key << "name" << YAML::Value << file.name;
    out << YAML::Key << "size" << YAML::Value << file.size;
    out << YAML::Key << "xxh3_64" << YAML::Value << YAML::DoubleQuoted << format::to_hex(file.xxh3);
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  if (!entries.empty()) {
    out << YAML::Key << "entries" << YAML::Value << YAML::BeginMap;
    for (const auto& [name, kind] : entries)
      out << YAML::Key << name << YAML::Value << YAML::DoubleQuoted << kind;
    out << YAML::EndMap;
  }
  if (!job.empty()) {
    out << YAML::Key << "job" << YAML::Value << YAML::BeginMap;
    for (const auto& [key, value] : job)
      out << YAML::Key << key << YAML::Value << YAML::DoubleQuoted << value;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

Manifest Manifest::parse(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw CorruptSnapshot("manifest '" + source + "' is not valid YAML: " + e.what());
  }
  if (!root.IsMap()) throw CorruptSnapshot("manifest '" + source + "' is not a YAML mapping");
  Manifest m;
  m.format_version = field<int>(root, "format_version", source);
  if (m.format_version < kOldestReadableFormatVersion || m.format_version > kSnapshotFormatVersion) {
    throw UnsupportedFormat(
        "manifest '" + source + "' has format version " + std::to_string(m.format_version) +
        "; this build of autosnap reads versions " + std::to_string(kOldestReadableFormatVersion) + " to " +
        std::to_string(kSnapshotFormatVersion) +
        (m.format_version > kSnapshotFormatVersion ? " (written by a newer autosnap)" : ""));
  }
  m.step = field<int64_t>(root, "step", source);
  if (m.step < 0) throw CorruptSnapshot("manifest '" + source + "': step is negative");
  if (m.format_version >= 2 || root["batch"]) {  // version 1 gained the loop position late
    m.epoch = field<int64_t>(root, "epoch", source);
    m.batch = field<int64_t>(root, "batch", source);
    m.epoch_ended = field<bool>(root, "epoch_ended", source);
    if (m.epoch < 0 || m.batch < 0)
      throw CorruptSnapshot("manifest '" + source + "': epoch and batch must not be negative");
  } else if (root["epoch"] && !root["epoch"].IsNull()) {  // version 1, before the loop position
    m.epoch = field<int64_t>(root, "epoch", source);
    m.epoch_ended = true;
  }
  m.time = field<std::string>(root, "time", source);
  m.reason = field<std::string>(root, "reason", source);
  m.world_size = field<int>(root, "world_size", source);
  if (m.world_size < 1) throw CorruptSnapshot("manifest '" + source + "': world_size must be at least 1");
  m.library_version = field<std::string>(root, "library_version", source);
  m.libtorch_version = field<std::string>(root, "libtorch_version", source);
  const YAML::Node files = root["files"];
  if (!files || !files.IsSequence())
    throw CorruptSnapshot("manifest '" + source + "': 'files' must be a list");
  std::unordered_set<std::string> names;
  for (const auto& node : files) {
    if (!node.IsMap()) throw CorruptSnapshot("manifest '" + source + "': each file entry must be a mapping");
    ManifestFile file;
    file.name = field<std::string>(node, "name", source);
    file.size = field<uint64_t>(node, "size", source);
    const auto hex = field<std::string>(node, "xxh3_64", source);
    if (!is_valid_snapshot_file_name(file.name)) {
      throw CorruptSnapshot("manifest '" + source + "': unsafe file name '" + file.name + "'");
    }
    if (!format::parse_hex(hex, file.xxh3)) {
      throw CorruptSnapshot("manifest '" + source + "': checksum of '" + file.name +
                            "' is not 16 hex digits");
    }
    if (!names.insert(file.name).second) {
      throw CorruptSnapshot("manifest '" + source + "' lists '" + file.name + "' twice");
    }
    m.files.push_back(std::move(file));
  }
  m.entries = name_map(root, "entries", source);
  m.job = name_map(root, "job", source);
  for (int rank = 0; rank < m.world_size; ++rank) {
    if (!m.find(shard_file_name(rank))) {
      throw CorruptSnapshot("manifest '" + source + "' has world size " + std::to_string(m.world_size) +
                            " but no file for rank " + std::to_string(rank));
    }
  }
  return m;
}

std::string utc_timestamp_now() {
  const auto now = std::chrono::system_clock::now();
  const auto seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[96];
  std::snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(millis));
  return text;
}

std::string shard_file_name(int rank) {
  char text[32];
  std::snprintf(text, sizeof(text), "rank-%05d.pt", rank);
  return text;
}

bool is_valid_snapshot_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos && name.size() <= 255;
}

}  // namespace autosnap
