#include "daemon/config_yaml.h"

#include <csignal>

namespace autosnap {
namespace config_yaml {

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

}  // namespace config_yaml
}  // namespace autosnap
