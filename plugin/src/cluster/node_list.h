#pragma once

// Slurm's compressed host lists, as in SLURM_JOB_NODELIST: "node[1-2]",
// "node[01-04,07]" (zero padding kept), "gpu-a[1-2],gpu-b3", and several
// bracket groups in one name ("rack[1-2]-n[1-2]": every combination, in
// Slurm's order).

#include <string>
#include <vector>

namespace autosnap {
namespace cluster {

/// Every host of `list`, in order. ConfigError naming `what` (e.g. the
/// variable) and the list when it is malformed: an unclosed or empty bracket,
/// a range that runs backwards, something other than digits in a range.
std::vector<std::string> expand_node_list(const std::string& list, const std::string& what = "node list");

}  // namespace cluster
}  // namespace autosnap
