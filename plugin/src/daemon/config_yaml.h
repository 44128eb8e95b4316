#pragma once

// The YAML side of reading a configuration (config.cpp holds the options):
// a Parser that walks the tree and names file:line:column and the dotted key
// in every error, and the table of options that each mapping is checked and
// parsed against.

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "autosnap/errors.h"

namespace autosnap {
namespace config_yaml {

/// "SIGUSR1" → 10, for the signal names a configuration may use.
const std::map<std::string, int>& signal_table();
/// Levenshtein distance, for "did you mean" on misspelt keys.
size_t edit_distance(const std::string& a, const std::string& b);

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

/// Checks the keys of `map` (unknown, misspelt, repeated), then parses the
/// options present in table order, then runs their `check`s.
void parse_options(const Parser& p, YAML::Node map, const std::string& section,
                   const std::vector<Option>& options);
/// A section such as `flush:`: a mapping of its own options, or empty.
void parse_section(const Parser& p, YAML::Node node, const std::string& path,
                   const std::vector<Option>& options);

}  // namespace config_yaml
}  // namespace autosnap
