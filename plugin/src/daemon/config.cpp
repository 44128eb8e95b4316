#include "autosnap/config.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "autosnap/device.h"
#include "autosnap/errors.h"
#include "autosnap/fs.h"
#include "daemon/control_protocol.h"
#include "fs/unique_suffix.h"

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
  void check_keys(const YAML::Node& map, const std::string& section,
                  const std::vector<std::string>& known) const {
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (!it->first.IsScalar()) {
        fail(it->first.Mark(), section, "keys must be plain names, not lists or mappings");
      }
      const std::string key = it->first.Scalar();
      if (!seen.insert(key).second) {
        fail(it->first.Mark(), section.empty() ? key : section + "." + key,
             "given twice; each key may appear once");
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

  std::string scalar_text(const YAML::Node& node, const std::string& path,
                          const std::string& expected) const {
    if (!node.IsScalar()) fail(node.Mark(), path, "expected " + expected);
    return node.Scalar();
  }

  bool boolean(const YAML::Node& node, const std::string& path) const {
    const std::string text = scalar_text(node, path, "true or false");
    bool value;
    if (!YAML::convert<bool>::decode(node, value))
      fail(node.Mark(), path, "expected true or false, got '" + text + "'");
    return value;
  }

  int64_t integer(const YAML::Node& node, const std::string& path, int64_t minimum,
                  const std::string& expected) const {
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
  E choice(const YAML::Node& node, const std::string& path,
           const std::vector<std::pair<std::string, E>>& options) const {
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
    if (text.find('-') != std::string::npos)
      fail(node.Mark(), path, "expected " + expected + ", got '" + text + "'");
    std::string unit = text.substr(end);
    unit.erase(std::remove(unit.begin(), unit.end(), ' '), unit.end());
    static const std::map<std::string, unsigned long long> units = {{"", 1},
                                                                    {"B", 1},
                                                                    {"K", 1ull << 10},
                                                                    {"KB", 1000},
                                                                    {"KiB", 1ull << 10},
                                                                    {"M", 1ull << 20},
                                                                    {"MB", 1000000},
                                                                    {"MiB", 1ull << 20},
                                                                    {"G", 1ull << 30},
                                                                    {"GB", 1000000000ull},
                                                                    {"GiB", 1ull << 30},
                                                                    {"T", 1ull << 40},
                                                                    {"TB", 1000000000000ull},
                                                                    {"TiB", 1ull << 40}};
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
      if (name.empty() || !std::all_of(name.begin(), name.end(),
                                       [](unsigned char c) { return std::isalnum(c) || c == '_'; })) {
        fail(mark, path, "invalid variable name '" + name + "' in '" + text + "'");
      }
      const char* value = std::getenv(name.c_str());
      if (value != nullptr && *value != '\0') {
        out += value;
      } else if (dash != std::string::npos) {
        out += inner.substr(dash + 2);
      } else {
        fail(mark, path,
             "environment variable " + name + " is not set (write ${" + name +
                 ":-default} to give a default)");
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
    // A name of its own per call: ranks that are threads of one process (and
    // jobs sharing the directory) probe it at the same moment.
    const std::string probe = join_path(directory, ".autosnap-write-probe-" + unique_suffix());
    fs.create_exclusive(probe)->close();
    fs.remove_file(probe);
  } catch (const IoError& e) {
    parser.fail(mark, "directory", "'" + directory + "' is not a writable directory: " + e.what());
  }
}

// One option of a mapping. Its key is named only here: the known-key check
// (unknown, misspelt and repeated keys) and the parsing both come from the table.
struct Option {
  const char* key;
  // Reads the option's value (present in the file) into the Config; `path` is
  // the dotted key for messages, e.g. "flush.max_pending".
  std::function<void(YAML::Node value, const std::string& path)> parse;
  // Required options: what to say when the key is absent.
  const char* if_missing = nullptr;
  // Runs once every option of the mapping is parsed (range checks that come last).
  std::function<void(YAML::Node value, const std::string& path)> check = nullptr;
};

// Checks the keys of `map`, then parses the options present in table order,
// so a file with several errors reports the same first one whatever its key
// order. (A YAML::Node is a handle on the tree: passing it by value is cheap.)
void parse_options(const Parser& p, YAML::Node map, const std::string& section,
                   const std::vector<Option>& options) {
  std::vector<std::string> known;
  for (const auto& option : options) known.push_back(option.key);
  p.check_keys(map, section, known);
  auto path_of = [&](const Option& option) {
    return section.empty() ? option.key : section + "." + option.key;
  };
  for (const auto& option : options) {
    YAML::Node value = map[option.key];
    if (value) {
      option.parse(value, path_of(option));
    } else if (option.if_missing != nullptr) {
      p.fail(map.Mark(), path_of(option), option.if_missing);
    }
  }
  for (const auto& option : options) {
    if (!option.check) continue;
    if (YAML::Node value = map[option.key]) option.check(value, path_of(option));
  }
}

// A section such as `flush:`: a mapping of its own options, or empty.
void parse_section(const Parser& p, YAML::Node node, const std::string& path,
                   const std::vector<Option>& options) {
  if (!node.IsMap() && !node.IsNull()) p.fail(node.Mark(), path, "expected a mapping of options");
  parse_options(p, node, path, options);
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
  if (!root || root.IsNull())
    p.fail(YAML::Mark::null_mark(), "",
           "the configuration is empty; expected a mapping with at least `directory`");
  if (!root.IsMap()) p.fail(root.Mark(), "", "expected a mapping of options at the top level");

  Config c;
  c.source = source;
  YAML::Mark directory_mark;
  using Node = YAML::Node;
  using Path = const std::string&;
  // Every key, in the order config/autosnap.yaml documents them (and unknown-key messages list them).
  parse_options(
      p, root, "",
      {
          {"directory",
           [&](Node n, Path path) {
             c.directory = p.string(n, path);
             if (c.directory.empty()) p.fail(n.Mark(), path, "expected a non-empty path");
             directory_mark = n.Mark();
           },
           "missing; expected the snapshot directory path"},
          {"device",
           [&](Node n, Path path) {
             c.device = p.string(n, path);
             if (!check_environment) return;
             try {
               resolve_device(c.device, path);
             } catch (const ConfigError&) {
               throw;
             } catch (const Error& e) {
               p.fail(n.Mark(), path, e.what());
             }
           }},
          {"resume",
           [&](Node n, Path path) {
             c.resume = p.choice<ResumeMode>(n, path,
                                             {{"auto", ResumeMode::kAuto},
                                              {"never", ResumeMode::kNever},
                                              {"required", ResumeMode::kRequired}});
           }},
          {"triggers",
           [&](Node n, Path path) {
             auto& t = c.triggers;
             parse_section(
                 p, n, path,
                 {
                     {"every_steps",
                      [&](Node m, Path key) {
                        t.every_steps = p.integer(m, key, 1, "a positive number of steps");
                      }},
                     {"every_seconds",
                      [&](Node m, Path key) {
                        t.every_seconds = p.number(m, key, "a positive number of seconds");
                      }},
                     {"on_epoch_end", [&](Node m, Path key) { t.on_epoch_end = p.boolean(m, key); }},
                     {"on_train_end", [&](Node m, Path key) { t.on_train_end = p.boolean(m, key); }},
                 });
             // The defaults enable on_train_end, so only this section can turn every trigger off.
             if (t.every_steps == 0 && t.every_seconds == 0 && !t.on_epoch_end && !t.on_train_end) {
               p.fail(n.Mark(), path,
                      "no trigger is enabled; set at least one of every_steps, every_seconds, on_epoch_end, "
                      "on_train_end");
             }
           }},
          {"retention",
           [&](Node n, Path path) {
             auto& r = c.retention;
             parse_section(p, n, path,
                           {
                               {"keep_last",
                                [&](Node m, Path key) {
                                  r.keep_last = p.integer(m, key, 0, "a count >= 0 (0 keeps all)");
                                }},
                               {"keep_every_steps",
                                [&](Node m, Path key) {
                                  r.keep_every_steps =
                                      p.integer(m, key, 0, "a number of steps >= 0 (0: off)");
                                }},
                           });
           }},
          {"flush",
           [&](Node n, Path path) {
             auto& f = c.flush;
             auto at_most_64 = [&p](const int& value) {
               return [&p, &value](Node m, Path key) {
                 if (value > 64) p.fail(m.Mark(), key, "expected at most 64");
               };
             };
             parse_section(p, n, path,
                           {
                               {"mode",
                                [&](Node m, Path key) {
                                  f.mode = p.choice<FlushMode>(
                                      m, key, {{"async", FlushMode::kAsync}, {"sync", FlushMode::kSync}});
                                }},
                               {"max_pending",
                                [&](Node m, Path key) {
                                  f.max_pending = static_cast<int>(p.integer(m, key, 1, "a positive count"));
                                },
                                nullptr, at_most_64(f.max_pending)},
                               {"when_busy",
                                [&](Node m, Path key) {
                                  f.when_busy = p.choice<WhenBusy>(
                                      m, key, {{"wait", WhenBusy::kWait}, {"skip", WhenBusy::kSkip}});
                                }},
                               {"staging_memory_limit",
                                [&](Node m, Path key) { f.staging_memory_limit = p.byte_size(m, key); }},
                               {"fsync", [&](Node m, Path key) { f.fsync = p.boolean(m, key); }},
                               {"overlap", [&](Node m, Path key) { f.overlap = p.boolean(m, key); }},
                               {"threads",
                                [&](Node m, Path key) {
                                  f.threads =
                                      static_cast<int>(p.integer(m, key, 1, "a positive thread count"));
                                },
                                nullptr, at_most_64(f.threads)},
                           });
           }},
          {"signals",
           [&](Node n, Path path) {
             auto& s = c.signals;
             parse_section(p, n, path,
                           {
                               {"snapshot", [&](Node m, Path key) { s.snapshot = p.signals(m, key); }},
                               {"snapshot_and_stop",
                                [&](Node m, Path key) { s.snapshot_and_stop = p.signals(m, key); }},
                               {"after_stop",
                                [&](Node m, Path key) {
                                  s.after_stop = p.choice<AfterStop>(
                                      m, key, {{"exit", AfterStop::kExit}, {"requeue", AfterStop::kRequeue}});
                                }},
                               {"exit_code",
                                [&](Node m, Path key) {
                                  s.exit_code =
                                      static_cast<int>(p.integer(m, key, 0, "an exit status 0..255"));
                                  if (s.exit_code > 255)
                                    p.fail(m.Mark(), key, "expected an exit status 0..255");
                                }},
                           });
             for (int sig : s.snapshot) {
               if (std::find(s.snapshot_and_stop.begin(), s.snapshot_and_stop.end(), sig) !=
                   s.snapshot_and_stop.end()) {
                 p.fail(n.Mark(), path,
                        signal_name(sig) + " is listed under both snapshot and snapshot_and_stop");
               }
             }
           }},
          {"control",
           [&](Node n, Path path) {
             // `control: false` is short for `control: {socket: false}`.
             if (n.IsScalar()) {
               c.control.socket = p.boolean(n, path);
               return;
             }
             parse_section(
                 p, n, path,
                 {
                     {"socket", [&](Node m, Path key) { c.control.socket = p.boolean(m, key); }},
                     {"socket_path", [&](Node m, Path key) { c.control.socket_path = p.string(m, key); }},
                 });
           }},
          {"capture",
           [&](Node n, Path path) {
             parse_section(p, n, path,
                           {{"rng", [&](Node m, Path key) { c.capture.rng = p.boolean(m, key); }}});
           }},
          {"restore",
           [&](Node n, Path path) {
             parse_section(p, n, path,
                           {
                               {"strict", [&](Node m, Path key) { c.restore.strict = p.boolean(m, key); }},
                               {"max_attempts",
                                [&](Node m, Path key) {
                                  c.restore.max_attempts =
                                      static_cast<int>(p.integer(m, key, 1, "a positive count"));
                                }},
                           });
           }},
          {"on_error",
           [&](Node n, Path path) {
             c.on_error = p.choice<OnError>(n, path, {{"warn", OnError::kWarn}, {"abort", OnError::kAbort}});
           }},
          {"max_consecutive_failures",
           [&](Node n, Path path) {
             c.max_consecutive_failures =
                 static_cast<int>(p.integer(n, path, 0, "a count of snapshots >= 0 (0: never an error)"));
           }},
          {"distributed",
           [&](Node n, Path path) {
             auto& d = c.distributed;
             parse_section(
                 p, n, path,
                 {
                     {"backend",
                      [&](Node m, Path key) {
                        d.backend = p.choice<DistributedBackend>(m, key,
                                                                 {{"auto", DistributedBackend::kAuto},
                                                                  {"none", DistributedBackend::kNone},
                                                                  {"gloo", DistributedBackend::kGloo}});
                      }},
                     {"timeout_seconds",
                      [&](Node m, Path key) {
                        d.timeout_seconds = p.integer(m, key, 1, "a positive number of seconds");
                      }},
                     {"port",
                      [&](Node m, Path key) {
                        d.port = static_cast<int>(p.integer(m, key, 0, "a TCP port 1..65535, or 0"));
                        if (d.port > 65535) p.fail(m.Mark(), key, "expected a TCP port 1..65535, or 0");
                      }},
                     {"replicated", [&](Node m, Path key) { d.replicated = p.boolean(m, key); }},
                     {"on_lost_rank",
                      [&](Node m, Path key) {
                        d.on_lost_rank = p.choice<OnLostRank>(
                            m, key, {{"exit", OnLostRank::kExit}, {"throw", OnLostRank::kThrow}});
                      }},
                 });
           }},
          {"log_level",
           [&](Node n, Path path) {
             c.log_level = p.choice<std::string>(n, path,
                                                 {{"debug", "debug"},
                                                  {"info", "info"},
                                                  {"warn", "warn"},
                                                  {"error", "error"},
                                                  {"off", "off"}});
           }},
      });

  // Last, so that only a configuration without errors touches the disk.
  if (check_environment) check_directory_writable(p, directory_mark, c.directory);
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
