#include "autosnap/config.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "autosnap/device.h"
#include "autosnap/errors.h"
#include "autosnap/fs.h"
#include "daemon/control_protocol.h"

namespace autosnap {
namespace {

const std::map<std::string, int>& signal_table() {
  static const std::map<std::string, int> table = {
      {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGTERM", SIGTERM}, {"SIGINT", SIGINT},
      {"SIGHUP", SIGHUP},   {"SIGQUIT", SIGQUIT}, {"SIGCONT", SIGCONT}, {"SIGALRM", SIGALRM},
  };
  return table;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Walks the YAML tree; every error names file:line:column and the key path.
class Parser {
 public:
  explicit Parser(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const YAML::Mark& mark, const std::string& key, const std::string& what) const {
    std::ostringstream out;
    out << source_;
    if (!mark.is_null()) out << ":" << mark.line + 1 << ":" << mark.column + 1;
    out << ": " << (key.empty() ? "" : key + ": ") << what;
    throw ConfigError(out.str());
  }

  // Rejects keys outside `known` (suggesting the closest one) and keys given twice.
  void check_keys(const YAML::Node& map, const std::string& section, const std::vector<std::string>& known) const {
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (!it->first.IsScalar()) {
        fail(it->first.Mark(), section, "keys must be plain names, not lists or mappings");
      }
      const std::string key = it->first.Scalar();
      if (!seen.insert(key).second) {
        fail(it->first.Mark(), section.empty() ? key : section + "." + key, "given twice; each key may appear once");
      }
      if (std::find(known.begin(), known.end(), key) != known.end()) continue;
      std::string best;
      size_t best_distance = std::string::npos;
      for (const auto& candidate : known) {
        size_t d = edit_distance(key, candidate);
        if (d < best_distance) {
          best_distance = d;
          best = candidate;
        }
      }
      const std::string path = section.empty() ? key : section + "." + key;
      if (best_distance <= std::max<size_t>(2, key.size() / 3)) {
        fail(it->first.Mark(), path, "unknown key; did you mean `" + best + "`?");
      }
      std::string list;
      for (const auto& candidate : known) list += (list.empty() ? "" : ", ") + candidate;
      fail(it->first.Mark(), path, "unknown key; expected one of: " + list);
    }
  }

  YAML::Node section(const YAML::Node& parent, const std::string& key, const std::string& path) const {
    YAML::Node node = parent[key];
    if (node && !node.IsMap() && !node.IsNull()) fail(node.Mark(), path, "expected a mapping of options");
    return node;
  }

  std::string scalar_text(const YAML::Node& node, const std::string& path, const std::string& expected) const {
    if (!node.IsScalar()) fail(node.Mark(), path, "expected " + expected);
    return node.Scalar();
  }

  bool boolean(const YAML::Node& node, const std::string& path) const {
    const std::string text = scalar_text(node, path, "true or false");
    bool value;
    if (!YAML::convert<bool>::decode(node, value)) fail(node.Mark(), path, "expected true or false, got '" + text + "'");
    return value;
  }

  int64_t integer(const YAML::Node& node, const std::string& path, int64_t minimum, const std::string& expected) const {
    const std::string text = scalar_text(node, path, expected);
    int64_t value;
    if (!YAML::convert<int64_t>::decode(node, value) || value < minimum) {
      fail(node.Mark(), path, "expected " + expected + ", got '" + text + "'");
    }
    return value;
  }

  double number(const YAML::Node& node, const std::string& path, const std::string& expected) const {
    const std::string text = scalar_text(node, path, expected);
    double value;
    if (!YAML::convert<double>::decode(node, value) || !(value > 0) || value > 1e12) {
      fail(node.Mark(), path, "expected " + expected + ", got '" + text + "'");
    }
    return value;
  }

  std::string string(const YAML::Node& node, const std::string& path) const {
    return expand(scalar_text(node, path, "a string"), node.Mark(), path);
  }

  template <typename E>
  E choice(const YAML::Node& node, const std::string& path, const std::vector<std::pair<std::string, E>>& options) const {
    std::string list;
    for (const auto& option : options) list += (list.empty() ? "" : " | ") + option.first;
    const std::string text = string(node, path);
    for (const auto& option : options) {
      if (option.first == text) return option.second;
    }
    fail(node.Mark(), path, "expected " + list + ", got '" + text + "'");
  }

  uint64_t byte_size(const YAML::Node& node, const std::string& path) const {
    const std::string expected = "a byte count such as 0, 536870912, 512MiB or 2GB";
    const std::string text = scalar_text(node, path, expected);
    size_t end = 0;
    unsigned long long value = 0;
    try {
      value = std::stoull(text, &end);
    } catch (const std::exception&) {
      fail(node.Mark(), path, "expected " + expected + ", got '" + text + "'");
    }
    if (text.find('-') != std::string::npos) fail(node.Mark(), path, "expected " + expected + ", got '" + text + "'");
    std::string unit = text.substr(end);
    unit.erase(std::remove(unit.begin(), unit.end(), ' '), unit.end());
    static const std::map<std::string, unsigned long long> units = {
        {"", 1},          {"B", 1},          {"K", 1ull << 10}, {"KB", 1000},     {"KiB", 1ull << 10},
        {"M", 1ull << 20}, {"MB", 1000000},   {"MiB", 1ull << 20}, {"G", 1ull << 30}, {"GB", 1000000000ull},
        {"GiB", 1ull << 30}, {"T", 1ull << 40}, {"TB", 1000000000000ull}, {"TiB", 1ull << 40}};
    auto it = units.find(unit);
    if (it == units.end()) fail(node.Mark(), path, "expected " + expected + ", got '" + text + "'");
    return value * it->second;
  }

  std::vector<int> signals(const YAML::Node& node, const std::string& path) const {
    std::vector<int> out;
    auto one = [&](const YAML::Node& item) {
      std::string name = string(item, path);
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
      if (name.rfind("SIG", 0) != 0) name = "SIG" + name;
      auto it = signal_table().find(name);
      if (it == signal_table().end()) {
        std::string list;
        for (const auto& entry : signal_table()) list += (list.empty() ? "" : ", ") + entry.first;
        fail(item.Mark(), path, "expected a signal name (" + list + "), got '" + item.Scalar() + "'");
      }
      out.push_back(it->second);
    };
    if (node.IsSequence()) {
      for (const auto& item : node) one(item);
    } else if (!node.IsNull()) {
      one(node);
    }
    return out;
  }

  // ${VAR}, ${VAR:-default}, $$.
  std::string expand(const std::string& text, const YAML::Mark& mark, const std::string& path) const {
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] != '$') {
        out += text[i];
        continue;
      }
      if (i + 1 < text.size() && text[i + 1] == '$') {
        out += '$';
        ++i;
        continue;
      }
      if (i + 1 >= text.size() || text[i + 1] != '{') {
        out += '$';
        continue;
      }
      const size_t close = text.find('}', i + 2);
      if (close == std::string::npos) fail(mark, path, "unterminated '${' in '" + text + "'");
      const std::string inner = text.substr(i + 2, close - i - 2);
      const size_t dash = inner.find(":-");
      const std::string name = inner.substr(0, dash);
      if (name.empty() || !std::all_of(name.begin(), name.end(), [](unsigned char c) { return std::isalnum(c) || c == '_'; })) {
        fail(mark, path, "invalid variable name '" + name + "' in '" + text + "'");
      }
      const char* value = std::getenv(name.c_str());
      if (value != nullptr && *value != '\0') {
        out += value;
      } else if (dash != std::string::npos) {
        out += inner.substr(dash + 2);
      } else {
        fail(mark, path, "environment variable " + name + " is not set (write ${" + name + ":-default} to give a default)");
      }
      i = close;
    }
    return out;
  }

 private:
  std::string source_;
};

void check_directory_writable(const Parser& parser, const YAML::Mark& mark, const std::string& directory) {
  auto& fs = default_file_system();
  try {
    // Durably: the store finds the directory existing and will not create it
    // again, and committed snapshots must not vanish with its directory entry.
    create_directories(fs, directory, /*durable=*/true);
    const std::string probe = join_path(directory, ".autosnap-write-probe-" + std::to_string(::getpid()));
    fs.create_exclusive(probe)->close();
    fs.remove_file(probe);
  } catch (const IoError& e) {
    parser.fail(mark, "directory", "'" + directory + "' is not a writable directory: " + e.what());
  }
}

}  // namespace

std::string signal_name(int signal_number) {
  for (const auto& [name, number] : signal_table()) {
    if (number == signal_number) return name;
  }
  return "signal " + std::to_string(signal_number);
}

std::string Config::control_socket_path() const {
  return control.socket_path.empty() ? control::default_socket_path(directory) : control.socket_path;
}

Config Config::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot read the configuration file: " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  return from_string(text.str(), path, /*check_environment=*/true);
}

namespace {

Config parse_config(const std::string& yaml, const std::string& source, bool check_environment) {
  Parser p(source);
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    p.fail(e.mark, "", "not valid YAML: " + e.msg);
  }
  if (!root || root.IsNull()) p.fail(YAML::Mark::null_mark(), "", "the configuration is empty; expected a mapping with at least `directory`");
  if (!root.IsMap()) p.fail(root.Mark(), "", "expected a mapping of options at the top level");
  p.check_keys(root, "", {"directory", "device", "resume", "triggers", "retention", "flush", "signals", "control",
                          "capture", "restore", "on_error", "distributed", "log_level"});

  Config c;
  c.source = source;
  if (!root["directory"]) p.fail(root.Mark(), "directory", "missing; expected the snapshot directory path");
  c.directory = p.string(root["directory"], "directory");
  if (c.directory.empty()) p.fail(root["directory"].Mark(), "directory", "expected a non-empty path");
  if (auto n = root["device"]) {
    c.device = p.string(n, "device");
    if (check_environment) {
      try {
        resolve_device(c.device, "device");
      } catch (const ConfigError&) {
        throw;
      } catch (const Error& e) {
        p.fail(n.Mark(), "device", e.what());
      }
    }
  }
  if (auto n = root["resume"]) {
    c.resume = p.choice<ResumeMode>(n, "resume", {{"auto", ResumeMode::kAuto}, {"never", ResumeMode::kNever},
                                                  {"required", ResumeMode::kRequired}});
  }

  YAML::Mark triggers_mark = root.Mark();
  if (auto t = p.section(root, "triggers", "triggers")) {
    triggers_mark = t.Mark();
    p.check_keys(t, "triggers", {"every_steps", "every_seconds", "on_epoch_end", "on_train_end"});
    if (auto n = t["every_steps"]) c.triggers.every_steps = p.integer(n, "triggers.every_steps", 1, "a positive number of steps");
    if (auto n = t["every_seconds"]) c.triggers.every_seconds = p.number(n, "triggers.every_seconds", "a positive number of seconds");
    if (auto n = t["on_epoch_end"]) c.triggers.on_epoch_end = p.boolean(n, "triggers.on_epoch_end");
    if (auto n = t["on_train_end"]) c.triggers.on_train_end = p.boolean(n, "triggers.on_train_end");
  }
  if (c.triggers.every_steps == 0 && c.triggers.every_seconds == 0 && !c.triggers.on_epoch_end &&
      !c.triggers.on_train_end) {
    p.fail(triggers_mark, "triggers",
           "no trigger is enabled; set at least one of every_steps, every_seconds, on_epoch_end, on_train_end");
  }

  if (auto r = p.section(root, "retention", "retention")) {
    p.check_keys(r, "retention", {"keep_last", "keep_every_steps"});
    if (auto n = r["keep_last"]) c.retention.keep_last = p.integer(n, "retention.keep_last", 0, "a count >= 0 (0 keeps all)");
    if (auto n = r["keep_every_steps"]) {
      c.retention.keep_every_steps = p.integer(n, "retention.keep_every_steps", 0, "a number of steps >= 0 (0: off)");
    }
  }

  if (auto f = p.section(root, "flush", "flush")) {
    p.check_keys(f, "flush", {"mode", "max_pending", "when_busy", "staging_memory_limit", "fsync", "overlap", "threads"});
    if (auto n = f["mode"]) c.flush.mode = p.choice<FlushMode>(n, "flush.mode", {{"async", FlushMode::kAsync}, {"sync", FlushMode::kSync}});
    if (auto n = f["max_pending"]) c.flush.max_pending = static_cast<int>(p.integer(n, "flush.max_pending", 1, "a positive count"));
    if (auto n = f["when_busy"]) c.flush.when_busy = p.choice<WhenBusy>(n, "flush.when_busy", {{"wait", WhenBusy::kWait}, {"skip", WhenBusy::kSkip}});
    if (auto n = f["staging_memory_limit"]) c.flush.staging_memory_limit = p.byte_size(n, "flush.staging_memory_limit");
    if (auto n = f["fsync"]) c.flush.fsync = p.boolean(n, "flush.fsync");
    if (auto n = f["overlap"]) c.flush.overlap = p.boolean(n, "flush.overlap");
    if (auto n = f["threads"]) c.flush.threads = static_cast<int>(p.integer(n, "flush.threads", 1, "a positive thread count"));
    if (c.flush.max_pending > 64) p.fail(f["max_pending"].Mark(), "flush.max_pending", "expected at most 64");
    if (c.flush.threads > 64) p.fail(f["threads"].Mark(), "flush.threads", "expected at most 64");
  }

  if (auto s = p.section(root, "signals", "signals")) {
    p.check_keys(s, "signals", {"snapshot", "snapshot_and_stop", "after_stop", "exit_code"});
    if (auto n = s["snapshot"]) c.signals.snapshot = p.signals(n, "signals.snapshot");
    if (auto n = s["snapshot_and_stop"]) c.signals.snapshot_and_stop = p.signals(n, "signals.snapshot_and_stop");
    if (auto n = s["after_stop"]) {
      c.signals.after_stop = p.choice<AfterStop>(n, "signals.after_stop", {{"exit", AfterStop::kExit}, {"requeue", AfterStop::kRequeue}});
    }
    if (auto n = s["exit_code"]) {
      c.signals.exit_code = static_cast<int>(p.integer(n, "signals.exit_code", 0, "an exit status 0..255"));
      if (c.signals.exit_code > 255) p.fail(n.Mark(), "signals.exit_code", "expected an exit status 0..255");
    }
    for (int sig : c.signals.snapshot) {
      if (std::find(c.signals.snapshot_and_stop.begin(), c.signals.snapshot_and_stop.end(), sig) !=
          c.signals.snapshot_and_stop.end()) {
        p.fail(s.Mark(), "signals", signal_name(sig) + " is listed under both snapshot and snapshot_and_stop");
      }
    }
  }

  if (auto n = root["control"]) {
    if (n.IsScalar()) {
      c.control.socket = p.boolean(n, "control");
    } else {
      auto ctl = p.section(root, "control", "control");
      p.check_keys(ctl, "control", {"socket", "socket_path"});
      if (auto m = ctl["socket"]) c.control.socket = p.boolean(m, "control.socket");
      if (auto m = ctl["socket_path"]) c.control.socket_path = p.string(m, "control.socket_path");
    }
  }

  if (auto cap = p.section(root, "capture", "capture")) {
    p.check_keys(cap, "capture", {"rng"});
    if (auto n = cap["rng"]) c.capture.rng = p.boolean(n, "capture.rng");
  }

  if (auto r = p.section(root, "restore", "restore")) {
    p.check_keys(r, "restore", {"strict", "max_attempts"});
    if (auto n = r["strict"]) c.restore.strict = p.boolean(n, "restore.strict");
    if (auto n = r["max_attempts"]) c.restore.max_attempts = static_cast<int>(p.integer(n, "restore.max_attempts", 1, "a positive count"));
  }

  if (auto n = root["on_error"]) {
    c.on_error = p.choice<OnError>(n, "on_error", {{"warn", OnError::kWarn}, {"abort", OnError::kAbort}});
  }

  if (auto d = p.section(root, "distributed", "distributed")) {
    p.check_keys(d, "distributed", {"backend", "timeout_seconds"});
    if (auto n = d["backend"]) {
      c.distributed.backend = p.choice<DistributedBackend>(
          n, "distributed.backend", {{"auto", DistributedBackend::kAuto}, {"none", DistributedBackend::kNone}, {"gloo", DistributedBackend::kGloo}});
    }
    if (auto n = d["timeout_seconds"]) c.distributed.timeout_seconds = p.integer(n, "distributed.timeout_seconds", 1, "a positive number of seconds");
  }

  if (auto n = root["log_level"]) {
    c.log_level = p.choice<std::string>(n, "log_level", {{"debug", "debug"}, {"info", "info"}, {"warn", "warn"}, {"error", "error"}, {"off", "off"}});
  }

  if (check_environment) check_directory_writable(p, root["directory"].Mark(), c.directory);
  return c;
}

}  // namespace

Config Config::from_string(const std::string& yaml, const std::string& source, bool check_environment) {
  try {
    return parse_config(yaml, source, check_environment);
  } catch (const YAML::Exception& e) {  // a shape no check above anticipated: still a clear error
    Parser(source).fail(e.mark, "", "cannot read the configuration: " + e.msg);
  }
}

}  // namespace autosnap
