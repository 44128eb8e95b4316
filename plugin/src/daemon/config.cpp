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
#include "daemon/config_yaml.h"
#include "daemon/control_protocol.h"
#include "fs/unique_suffix.h"

namespace autosnap {
namespace {

using config_yaml::Option;
using config_yaml::parse_options;
using config_yaml::parse_section;
using config_yaml::Parser;
using config_yaml::signal_table;
using Node = YAML::Node;
using Path = const std::string&;

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
  return from_string(text.str(), path);
}

namespace {

// One function per section of the file, in the order config/autosnap.yaml documents them.

void parse_triggers(const Parser& p, Node n, Path path, TriggerConfig& t) {
  parse_section(
      p, n, path,
      {
          {"every_steps",
           [&](Node m, Path key) { t.every_steps = p.integer(m, key, 1, "a positive number of steps"); }},
          {"every_seconds",
           [&](Node m, Path key) { t.every_seconds = p.number(m, key, "a positive number of seconds"); }},
          {"max_overhead",
           [&](Node m, Path key) {
             t.max_overhead = p.number(m, key, "a fraction of training time, e.g. 0.02 for 2 %");
             if (t.max_overhead >= 1)
               p.fail(m.Mark(), key, "expected a fraction of training time below 1, e.g. 0.02 for 2 %");
           }},
          {"on_epoch_end", [&](Node m, Path key) { t.on_epoch_end = p.boolean(m, key); }},
          {"on_train_end", [&](Node m, Path key) { t.on_train_end = p.boolean(m, key); }},
      });
  // The defaults enable on_train_end, so only this section can turn every trigger off.
  if (t.every_steps == 0 && t.every_seconds == 0 && t.max_overhead == 0 && !t.on_epoch_end &&
      !t.on_train_end) {
    p.fail(
        n.Mark(), path,
        "no trigger is enabled; set at least one of every_steps, every_seconds, max_overhead, on_epoch_end, "
        "on_train_end");
  }
}

void parse_retention(const Parser& p, Node n, Path path, RetentionRule& r) {
  parse_section(
      p, n, path,
      {
          {"keep_last",
           [&](Node m, Path key) { r.keep_last = p.integer(m, key, 0, "a count >= 0 (0 keeps all)"); }},
          {"keep_every_steps",
           [&](Node m, Path key) {
             r.keep_every_steps = p.integer(m, key, 0, "a number of steps >= 0 (0: off)");
           }},
      });
}

void parse_flush(const Parser& p, Node n, Path path, FlushConfig& f) {
  auto at_most_64 = [&p](const int& value) {
    return [&p, &value](Node m, Path key) {
      if (value > 64) p.fail(m.Mark(), key, "expected at most 64");
    };
  };
  parse_section(
      p, n, path,
      {
          {"mode",
           [&](Node m, Path key) {
             f.mode = p.choice<FlushMode>(m, key, {{"async", FlushMode::kAsync}, {"sync", FlushMode::kSync}});
           }},
          {"max_pending",
           [&](Node m, Path key) {
             f.max_pending = static_cast<int>(p.integer(m, key, 1, "a positive count"));
           },
           nullptr, at_most_64(f.max_pending)},
          {"when_busy",
           [&](Node m, Path key) {
             f.when_busy = p.choice<WhenBusy>(m, key, {{"wait", WhenBusy::kWait}, {"skip", WhenBusy::kSkip}});
           }},
          {"staging_memory_limit", [&](Node m, Path key) { f.staging_memory_limit = p.byte_size(m, key); }},
          {"fsync", [&](Node m, Path key) { f.fsync = p.boolean(m, key); }},
          {"overlap", [&](Node m, Path key) { f.overlap = p.boolean(m, key); }},
          {"direct_io",
           [&](Node m, Path key) {
             f.direct_io = p.choice<DirectIo>(
                 m, key,
                 {{"auto", DirectIo::kAuto}, {"always", DirectIo::kAlways}, {"never", DirectIo::kNever}});
           }},
          {"threads",
           [&](Node m, Path key) {
             f.threads = static_cast<int>(p.integer(m, key, 1, "a positive thread count"));
           },
           nullptr, at_most_64(f.threads)},
      });
}

void parse_signals(const Parser& p, Node n, Path path, SignalConfig& s) {
  parse_section(p, n, path,
                {
                    {"snapshot", [&](Node m, Path key) { s.snapshot = p.signals(m, key); }},
                    {"snapshot_and_stop", [&](Node m, Path key) { s.snapshot_and_stop = p.signals(m, key); }},
                    {"after_stop",
                     [&](Node m, Path key) {
                       s.after_stop = p.choice<AfterStop>(
                           m, key, {{"exit", AfterStop::kExit}, {"requeue", AfterStop::kRequeue}});
                     }},
                    {"exit_code",
                     [&](Node m, Path key) {
                       s.exit_code = static_cast<int>(p.integer(m, key, 0, "an exit status 0..255"));
                       if (s.exit_code > 255) p.fail(m.Mark(), key, "expected an exit status 0..255");
                     }},
                });
  for (int sig : s.snapshot) {
    if (std::find(s.snapshot_and_stop.begin(), s.snapshot_and_stop.end(), sig) != s.snapshot_and_stop.end()) {
      p.fail(n.Mark(), path, signal_name(sig) + " is listed under both snapshot and snapshot_and_stop");
    }
  }
}

void parse_control(const Parser& p, Node n, Path path, ControlConfig& c) {
  // `control: false` is short for `control: {socket: false}`.
  if (n.IsScalar()) {
    c.socket = p.boolean(n, path);
    return;
  }
  parse_section(p, n, path,
                {
                    {"socket", [&](Node m, Path key) { c.socket = p.boolean(m, key); }},
                    {"socket_path", [&](Node m, Path key) { c.socket_path = p.string(m, key); }},
                });
}

void parse_restore(const Parser& p, Node n, Path path, RestoreConfig& r) {
  parse_section(p, n, path,
                {
                    {"strict", [&](Node m, Path key) { r.strict = p.boolean(m, key); }},
                    {"max_attempts",
                     [&](Node m, Path key) {
                       r.max_attempts = static_cast<int>(p.integer(m, key, 1, "a positive count"));
                     }},
                });
}

void parse_distributed(const Parser& p, Node n, Path path, DistributedConfig& d) {
  parse_section(p, n, path,
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
}

void parse_memory(const Parser& p, Node n, Path path, MemoryConfig& m) {
  m.enabled = true;  // `memory:` alone takes the defaults
  parse_section(
      p, n, path,
      {
          {"every_steps",
           [&](Node v, Path key) { m.every_steps = p.integer(v, key, 1, "a positive number of steps"); }},
          {"keep_last",
           [&](Node v, Path key) { m.keep_last = p.integer(v, key, 1, "a count >= 1 of memory snapshots"); }},
          {"replicas",
           [&](Node v, Path key) {
             m.replicas = static_cast<int>(p.integer(v, key, 0, "a count >= 0 of copies on other nodes"));
           }},
          {"directory",
           [&](Node v, Path key) {
             m.directory = p.string(v, key);
             if (m.directory.empty())
               p.fail(v.Mark(), key, "expected a non-empty path (a tmpfs, e.g. /dev/shm)");
           }},
          {"size_limit", [&](Node v, Path key) { m.size_limit = p.byte_size(v, key); }},
      });
}

// "test.yaml:1:12": where a key's value was given, for errors found after parsing.
std::string location(const std::string& source, const YAML::Mark& mark) {
  return source + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

// The top level: every key, in the order config/autosnap.yaml documents them
// (and unknown-key messages list them).
void parse_top_level(const Parser& p, Node root, Config& c) {
  parse_options(
      p, root, "",
      {
          {"directory",
           [&](Node n, Path path) {
             c.directory = p.string(n, path);
             if (c.directory.empty()) p.fail(n.Mark(), path, "expected a non-empty path");
             c.key_locations["directory"] = location(c.source, n.Mark());
           },
           "missing; expected the snapshot directory path"},
          {"device",
           [&](Node n, Path path) {
             c.device = p.string(n, path);
             c.key_locations["device"] = location(c.source, n.Mark());
           }},
          {"resume",
           [&](Node n, Path path) {
             c.resume = p.choice<ResumeMode>(n, path,
                                             {{"auto", ResumeMode::kAuto},
                                              {"never", ResumeMode::kNever},
                                              {"required", ResumeMode::kRequired}});
           }},
          {"triggers", [&](Node n, Path path) { parse_triggers(p, n, path, c.triggers); }},
          {"retention", [&](Node n, Path path) { parse_retention(p, n, path, c.retention); }},
          {"flush", [&](Node n, Path path) { parse_flush(p, n, path, c.flush); }},
          {"signals", [&](Node n, Path path) { parse_signals(p, n, path, c.signals); }},
          {"control", [&](Node n, Path path) { parse_control(p, n, path, c.control); }},
          {"capture",
           [&](Node n, Path path) {
             parse_section(p, n, path,
                           {{"rng", [&](Node m, Path key) { c.capture.rng = p.boolean(m, key); }}});
           }},
          {"restore", [&](Node n, Path path) { parse_restore(p, n, path, c.restore); }},
          {"on_error",
           [&](Node n, Path path) {
             c.on_error = p.choice<OnError>(n, path, {{"warn", OnError::kWarn}, {"abort", OnError::kAbort}});
           }},
          {"max_consecutive_failures",
           [&](Node n, Path path) {
             c.max_consecutive_failures =
                 static_cast<int>(p.integer(n, path, 0, "a count of snapshots >= 0 (0: never an error)"));
           }},
          {"distributed", [&](Node n, Path path) { parse_distributed(p, n, path, c.distributed); }},
          {"memory", [&](Node n, Path path) { parse_memory(p, n, path, c.memory); }},
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
}

Config parse_config(const std::string& yaml, const std::string& source) {
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
  parse_top_level(p, root, c);
  return c;
}

// "test.yaml:1:12: directory: " (the source alone when the key was not in the file).
std::string where(const Config& c, const std::string& key) {
  const auto it = c.key_locations.find(key);
  return (it != c.key_locations.end() ? it->second : c.source) + ": " + key + ": ";
}

}  // namespace

Config Config::from_string(const std::string& yaml, const std::string& source) {
  try {
    return parse_config(yaml, source);
  } catch (const YAML::Exception& e) {  // a shape no check above anticipated: still a clear error
    Parser(source).fail(e.mark, "", "cannot read the configuration: " + e.msg);
  }
}

void Config::check_environment(FileSystem& fs) const {
  try {
    resolve_device(device, "device");
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    throw ConfigError(where(*this, "device") + e.what());
  }
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
    throw ConfigError(where(*this, "directory") + "'" + directory +
                      "' is not a writable directory: " + e.what());
  }
}

}  // namespace autosnap
