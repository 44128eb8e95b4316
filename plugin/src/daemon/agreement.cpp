#include "daemon/agreement.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "autosnap/errors.h"

namespace autosnap {
namespace daemon {
namespace {

using nlohmann::json;

const char* state_name(RankReport::State state) {
  switch (state) {
    case RankReport::State::kReady: return "ready";
    case RankReport::State::kDamaged: return "damaged";
    case RankReport::State::kFailed: return "failed";
  }
  return "?";
}

const char* kind_name(Verdict::Kind kind) {
  switch (kind) {
    case Verdict::Kind::kGo: return "go";
    case Verdict::Kind::kNothing: return "nothing";
    case Verdict::Kind::kDamaged: return "damaged";
    case Verdict::Kind::kFailed: return "failed";
  }
  return "?";
}

template <typename Enum>
Enum parse_name(const std::string& name, std::initializer_list<Enum> values, const char* (*name_of)(Enum)) {
  for (Enum value : values)
    if (name == name_of(value)) return value;
  throw CoordinationError("unknown value '" + name + "' in a message between ranks");
}

json parse_json(const std::string& text, const char* what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw CoordinationError(std::string("a malformed ") + what + " from another rank: " + e.what());
  }
}

}  // namespace

std::string encode(const RankReport& report) {
  json files = json::array();
  for (const auto& f : report.files) files.push_back({f.name, f.size, f.xxh3});
  return json{{"state", state_name(report.state)},
              {"problem", report.problem},
              {"step", report.step},
              {"files", std::move(files)},
              {"steps", report.steps},
              {"replicas", report.replicas},
              {"accepts_replicas", report.accepts_replicas}}
      .dump();
}

std::string encode(const Verdict& verdict) {
  json fetches = json::array();
  for (const auto& f : verdict.fetches) fetches.push_back({f.holder, f.rank});
  return json{{"kind", kind_name(verdict.kind)},
              {"why", verdict.why},
              {"step", verdict.step},
              {"detail", verdict.detail},
              {"settled_step", verdict.settled_step},
              {"settled_committed", verdict.settled_committed},
              {"from_memory", verdict.from_memory},
              {"persist", verdict.persist},
              {"fetches", std::move(fetches)}}
      .dump();
}

RankReport decode_report(const std::string& text) {
  const json j = parse_json(text, "report");
  try {
    RankReport report;
    report.state = parse_name(
        j.at("state").get<std::string>(),
        {RankReport::State::kReady, RankReport::State::kDamaged, RankReport::State::kFailed}, state_name);
    report.problem = j.at("problem").get<std::string>();
    report.step = j.at("step").get<int64_t>();
    for (const auto& f : j.at("files"))
      report.files.push_back({f.at(0).get<std::string>(), f.at(1).get<uint64_t>(), f.at(2).get<uint64_t>()});
    report.steps = j.at("steps").get<std::vector<int64_t>>();
    report.replicas = j.at("replicas").get<std::map<int, std::vector<int64_t>>>();
    report.accepts_replicas = j.at("accepts_replicas").get<bool>();
    return report;
  } catch (const json::exception& e) {
    throw CoordinationError(std::string("a malformed report from another rank: ") + e.what());
  }
}

Verdict decode_verdict(const std::string& text) {
  const json j = parse_json(text, "verdict");
  try {
    Verdict verdict;
    verdict.kind = parse_name(
        j.at("kind").get<std::string>(),
        {Verdict::Kind::kGo, Verdict::Kind::kNothing, Verdict::Kind::kDamaged, Verdict::Kind::kFailed},
        kind_name);
    verdict.why = j.at("why").get<std::string>();
    verdict.step = j.at("step").get<int64_t>();
    verdict.detail = j.at("detail").get<std::string>();
    verdict.settled_step = j.at("settled_step").get<int64_t>();
    verdict.settled_committed = j.at("settled_committed").get<bool>();
    verdict.from_memory = j.at("from_memory").get<bool>();
    verdict.persist = j.at("persist").get<bool>();
    for (const auto& f : j.at("fetches")) verdict.fetches.push_back({f.at(0).get<int>(), f.at(1).get<int>()});
    return verdict;
  } catch (const json::exception& e) {
    throw CoordinationError(std::string("a malformed verdict from rank 0: ") + e.what());
  }
}

Verdict first_problem(const std::vector<RankReport>& reports, const Coordinator& coordinator) {
  Verdict verdict;
  verdict.step = reports.front().step;
  auto said = [&](size_t r) {
    return (reports.size() == 1 ? std::string() : coordinator.where(static_cast<int>(r)) + ": ") +
           reports[r].problem;
  };
  for (size_t r = 1; r < reports.size(); ++r) {
    if (reports[r].step != verdict.step) {
      verdict.kind = Verdict::Kind::kFailed;
      verdict.why = "the ranks disagree on the step: " + coordinator.where(0) + " is at step " +
                    std::to_string(verdict.step) + ", " + coordinator.where(static_cast<int>(r)) +
                    " at step " + std::to_string(reports[r].step);
      return verdict;
    }
  }
  for (size_t r = 0; r < reports.size(); ++r) {
    if (reports[r].state == RankReport::State::kFailed) {
      verdict.kind = Verdict::Kind::kFailed;
      verdict.why = said(r);
      return verdict;
    }
  }
  for (size_t r = 0; r < reports.size(); ++r) {
    if (reports[r].state == RankReport::State::kDamaged) {
      verdict.kind = Verdict::Kind::kDamaged;
      verdict.why = said(r);
      return verdict;
    }
  }
  return verdict;
}

std::optional<int64_t> newest_common_step(const std::vector<RankReport>& reports,
                                          std::vector<ReplicaFetch>* fetches) {
  auto has = [](const std::vector<int64_t>& steps, int64_t step) {
    return std::binary_search(steps.begin(), steps.end(), step);
  };
  // The lowest rank holding a replica of `rank`'s `step`, or -1.
  auto holder_of = [&](int rank, int64_t step) {
    for (size_t h = 0; h < reports.size(); ++h) {
      const auto held = reports[h].replicas.find(rank);
      if (held != reports[h].replicas.end() && has(held->second, step)) return static_cast<int>(h);
    }
    return -1;
  };
  std::vector<int64_t> candidates;
  for (const auto& report : reports) {
    candidates.insert(candidates.end(), report.steps.begin(), report.steps.end());
    for (const auto& [rank, steps] : report.replicas)
      candidates.insert(candidates.end(), steps.begin(), steps.end());
  }
  std::sort(candidates.rbegin(), candidates.rend());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  for (int64_t step : candidates) {
    std::vector<ReplicaFetch> needed;
    bool everywhere = true;
    for (size_t r = 0; r < reports.size() && everywhere; ++r) {
      if (has(reports[r].steps, step)) continue;
      const int holder = reports[r].accepts_replicas ? holder_of(static_cast<int>(r), step) : -1;
      everywhere = holder >= 0;
      needed.push_back({holder, static_cast<int>(r)});
    }
    if (!everywhere) continue;
    if (fetches) *fetches = std::move(needed);
    return step;
  }
  return std::nullopt;
}

Verdict agree(Coordinator& coordinator, Channel channel, const RankReport& mine,
              const std::function<Verdict(const std::vector<RankReport>&)>& decide) {
  const auto texts = coordinator.exchange(encode(mine), channel);
  std::string decided;
  if (coordinator.rank() == 0) {
    Verdict verdict;
    try {
      std::vector<RankReport> reports;
      for (const auto& text : texts) reports.push_back(decode_report(text));
      verdict = decide(reports);
    } catch (const std::exception& e) {
      verdict.kind = Verdict::Kind::kFailed;
      verdict.step = mine.step;
      verdict.why = (coordinator.world_size() == 1 ? std::string() : coordinator.where(0) + ": ") + e.what();
    }
    decided = encode(verdict);
  }
  return decode_verdict(coordinator.broadcast(decided, channel));
}

}  // namespace daemon
}  // namespace autosnap
