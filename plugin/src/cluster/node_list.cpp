#include "cluster/node_list.h"

#include <cctype>

#include "autosnap/errors.h"

namespace autosnap {
namespace cluster {
namespace {

constexpr size_t kMaxHosts = 1 << 20;  // a typo like node[1-999999999] must not exhaust memory

class Parser {
 public:
  Parser(const std::string& list, const std::string& what) : list_(list), what_(what) {}

  std::vector<std::string> hosts() {
    std::vector<std::string> out;
    for (const std::string& item : split_top_level()) {
      if (item.empty()) fail("an empty host name");
      for (auto& host : expand(item)) {
        out.push_back(std::move(host));
        if (out.size() > kMaxHosts) fail("more than " + std::to_string(kMaxHosts) + " hosts");
      }
    }
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw ConfigError(what_ + " '" + list_ + "': " + problem +
                      "; expected host names and bracket ranges such as node[01-04,07],gpu-b3");
  }

  // Items separated by commas outside brackets.
  std::vector<std::string> split_top_level() const {
    std::vector<std::string> items(1);
    int depth = 0;
    for (char c : list_) {
      if (c == '[' && ++depth > 1) fail("a bracket inside a bracket");
      if (c == ']' && --depth < 0) fail("a ']' without its '['");
      if (c == ',' && depth == 0) {
        items.emplace_back();
      } else {
        items.back() += c;
      }
    }
    if (depth != 0) fail("a '[' without its ']'");
    return items;
  }

  // "n[1-2]-r[3,5]" -> n1-r3, n1-r5, n2-r3, n2-r5.
  std::vector<std::string> expand(const std::string& item) const {
    std::vector<std::string> prefixes{""};
    size_t i = 0;
    while (i < item.size()) {
      const size_t open = item.find('[', i);
      const std::string text = item.substr(i, open == std::string::npos ? std::string::npos : open - i);
      for (auto& p : prefixes) p += text;
      if (open == std::string::npos) break;
      const size_t close = item.find(']', open);
      // Slurm's order: an earlier bracket varies slower.
      const auto range = numbers(item.substr(open + 1, close - open - 1));
      std::vector<std::string> next;
      for (const auto& p : prefixes) {
        for (const auto& number : range) next.push_back(p + number);
        if (next.size() > kMaxHosts) fail("more than " + std::to_string(kMaxHosts) + " hosts");
      }
      prefixes = std::move(next);
      i = close + 1;
    }
    return prefixes;
  }

  // "01-04,07" -> 01 02 03 04 07 (the width of the lower bound is kept).
  std::vector<std::string> numbers(const std::string& ranges) const {
    if (ranges.empty()) fail("an empty bracket");
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= ranges.size()) {
      size_t comma = ranges.find(',', start);
      if (comma == std::string::npos) comma = ranges.size();
      const std::string range = ranges.substr(start, comma - start);
      const size_t dash = range.find('-');
      const std::string low = range.substr(0, dash);
      const std::string high = dash == std::string::npos ? low : range.substr(dash + 1);
      const uint64_t from = number(low), to = number(high);
      if (to < from) fail("the range '" + range + "' runs backwards");
      if (to - from >= kMaxHosts) fail("more than " + std::to_string(kMaxHosts) + " hosts");
      for (uint64_t n = from; n <= to; ++n) {
        std::string digits = std::to_string(n);
        if (digits.size() < low.size()) digits.insert(0, low.size() - digits.size(), '0');
        out.push_back(std::move(digits));
      }
      start = comma + 1;
    }
    return out;
  }

  uint64_t number(const std::string& digits) const {
    if (digits.empty() || digits.size() > 18) fail("'" + digits + "' is not a number in a range");
    for (char c : digits)
      if (std::isdigit(static_cast<unsigned char>(c)) == 0) fail("'" + digits + "' is not a number in a range");
    return std::stoull(digits);
  }

  const std::string& list_;
  const std::string& what_;
};

}  // namespace

std::vector<std::string> expand_node_list(const std::string& list, const std::string& what) {
  return Parser(list, what).hosts();
}

}  // namespace cluster
}  // namespace autosnap
