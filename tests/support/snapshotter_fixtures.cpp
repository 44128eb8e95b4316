#include "support/snapshotter_fixtures.h"

#include <fstream>

#include "autosnap/store.h"
#include "autosnap/values.h"
#include "control_client.h"
#include "daemon/control_protocol.h"

namespace autosnap {
namespace testing {

using namespace std::chrono_literals;

Config make_config(const std::string& directory, const std::string& extra) {
  return Config::from_string(
      "directory: " + directory + "\ncontrol: {socket: false}\nlog_level: warn\n" + extra, "test.yaml");
}

Config make_config_with_socket(const std::string& directory, const std::string& extra) {
  return Config::from_string("directory: " + directory + "\nlog_level: warn\n" + extra, "test.yaml");
}

nlohmann::json request_snapshot(const std::string& directory, const std::string& reason) {
  try {
    return control::send_request(control::default_socket_path(directory),
                                 {{"cmd", "snapshot"}, {"reason", reason}}, 30s);
  } catch (const std::exception& e) {
    return {{"client_error", e.what()}};
  }
}

std::vector<nlohmann::json> read_events(const std::string& directory) {
  return read_events_file(directory + "/events.jsonl");
}

std::vector<nlohmann::json> read_events_file(const std::string& path) {
  std::vector<nlohmann::json> events;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) events.push_back(nlohmann::json::parse(line));
  return events;
}

int count_events(const std::string& directory, const std::string& kind) {
  int n = 0;
  for (const auto& e : read_events(directory)) n += e["event"] == kind;
  return n;
}

c10::IValue read_entry(const std::string& directory, int64_t step, const std::string& name) {
  auto store = SnapshotStore::open_read_only(directory);
  return dict_at(store->open(step).read_shard(0, torch::kCPU), name);
}

}  // namespace testing
}  // namespace autosnap
