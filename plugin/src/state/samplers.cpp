#include "autosnap/samplers.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/randperm.h>
#include <torch/serialize/archive.h>

#include <algorithm>
#include <deque>
#include <mutex>
#include <numeric>
#include <string>

#include "autosnap/errors.h"
#include "autosnap/values.h"
#include "state/saved_dict.h"

namespace autosnap {
namespace {

constexpr const char* kArchiveKey = "autosnap_sampler";

uint64_t seed_from_default_generator() {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get<at::CPUGeneratorImpl>()->random64() >> 1;  // 63 bits: a non-negative int in Python
}

// Python's torch.randperm(n, generator=torch.Generator().manual_seed(seed)).
std::vector<size_t> random_order(size_t n, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor perm = at::randperm(static_cast<int64_t>(n), generator, at::kLong);
  const int64_t* p = perm.data_ptr<int64_t>();
  return std::vector<size_t>(p, p + n);
}

std::vector<size_t> identity_order(size_t n) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  return order;
}

}  // namespace

// Shared by every copy of one sampler (the tracked one and the loader's).
// The loader and the hooks run on the training thread; the mutex only makes
// a stray call from another thread harmless.
struct state::SamplerShared {
  enum class Kind { kRandom, kSequential, kDistributed };
  Kind kind;
  size_t size;
  uint64_t seed = 0;
  size_t num_replicas = 1;
  size_t rank = 0;
  bool shuffle = true;
  bool drop_last = false;

  mutable std::mutex mutex;
  int64_t epoch = -1;
  std::vector<size_t> order;      // this epoch's indices (this rank's part)
  size_t position = 0;            // samples of `order` the loop consumed
  int64_t batches = 0;            // batches the loop consumed
  size_t handed_out = 0;          // samples given to the loader so far
  std::deque<size_t> unconsumed;  // sizes of batches handed out, not yet consumed
  bool resume_pending = false;    // the next reset() continues `epoch` at `position`
  bool epoch_ended = false;       // the loop called on_epoch_end for `epoch`
  // Distributed, resumed with another number of ranks: what the job had not
  // consumed of this epoch's order, split anew among the ranks (saved as is).
  std::optional<std::vector<size_t>> rest_of_epoch;

  const char* kind_name() const {
    switch (kind) {
      case Kind::kRandom: return "random";
      case Kind::kSequential: return "sequential";
      case Kind::kDistributed: return "distributed";
    }
    return "?";
  }

  // The whole job's order of epoch e, before it is split among ranks.
  std::vector<size_t> global_order(int64_t e) const {
    if (rest_of_epoch) return *rest_of_epoch;
    const bool shuffled = kind == Kind::kRandom || (kind == Kind::kDistributed && shuffle);
    return shuffled ? random_order(size, seed + static_cast<uint64_t>(e)) : identity_order(size);
  }

  // Padded by wrapping around (or cut, with drop_last) to a multiple of `replicas`.
  std::vector<size_t> fitted(std::vector<size_t> all, size_t replicas) const {
    const size_t n = all.size();
    const size_t total = drop_last ? n / replicas * replicas : (n + replicas - 1) / replicas * replicas;
    all.reserve(total);  // push_back(all[i]) must not reallocate under its own argument
    for (size_t i = 0; all.size() < total; ++i) all.push_back(all[i]);
    all.resize(total);
    return all;
  }

  std::vector<size_t> order_of(int64_t e) const {
    std::vector<size_t> all = global_order(e);
    if (kind != Kind::kDistributed) return all;
    all = fitted(std::move(all), num_replicas);
    std::vector<size_t> part;
    for (size_t i = rank; i < all.size(); i += num_replicas) part.push_back(all[i]);
    return part;
  }

  // Caller holds the mutex.
  void start_epoch() {
    epoch_ended = false;
    if (resume_pending) {
      resume_pending = false;
    } else {
      ++epoch;
      position = 0;
      batches = 0;
      rest_of_epoch.reset();
    }
    order = order_of(epoch);
    position = std::min(position, order.size());
    handed_out = position;
    unconsumed.clear();
  }
};

ResumableSampler::ResumableSampler(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

void ResumableSampler::reset(torch::optional<size_t> new_size) {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  if (new_size && *new_size != shared_->size) {
    if (shared_->resume_pending) {
      throw Error("ResumableSampler: reset() to " + std::to_string(*new_size) +
                  " samples, but the restored position is in an epoch of " + std::to_string(shared_->size));
    }
    shared_->size = *new_size;
  }
  shared_->start_epoch();
}

torch::optional<std::vector<size_t>> ResumableSampler::next(size_t batch_size) {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  Shared& s = *shared_;
  if (s.epoch < 0 || s.resume_pending) s.start_epoch();  // used without a loader's reset()
  if (s.handed_out >= s.order.size() || batch_size == 0) return torch::nullopt;
  const size_t n = std::min(batch_size, s.order.size() - s.handed_out);
  std::vector<size_t> batch(s.order.begin() + static_cast<std::ptrdiff_t>(s.handed_out),
                            s.order.begin() + static_cast<std::ptrdiff_t>(s.handed_out + n));
  s.handed_out += n;
  s.unconsumed.push_back(n);
  return batch;
}

void ResumableSampler::epoch_finished() {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  shared_->epoch_ended = true;
}

void ResumableSampler::batch_consumed() {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  Shared& s = *shared_;
  if (s.unconsumed.empty()) return;  // a step that drew no batch from this sampler
  s.position += s.unconsumed.front();
  s.unconsumed.pop_front();
  ++s.batches;
}

int64_t ResumableSampler::epoch() const {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->epoch;
}

int64_t ResumableSampler::batches_consumed() const {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->batches;
}

size_t ResumableSampler::size() const {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->size;
}

c10::IValue ResumableSampler::state() const {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  const Shared& s = *shared_;
  // The seed is saved as its two's-complement int64 (pickle ints are signed).
  c10::impl::GenericDict d = dict({{"kind", std::string(s.kind_name())},
                                   {"size", static_cast<int64_t>(s.size)},
                                   {"seed", static_cast<int64_t>(s.seed)},
                                   {"epoch", s.epoch},
                                   {"position", static_cast<int64_t>(s.position)},
                                   {"batches", s.batches},
                                   {"epoch_ended", s.epoch_ended}});
  if (s.kind == Shared::Kind::kDistributed) {
    d.insert("num_replicas", static_cast<int64_t>(s.num_replicas));
    d.insert("rank", static_cast<int64_t>(s.rank));
    d.insert("shuffle", s.shuffle);
    d.insert("drop_last", s.drop_last);
    if (s.rest_of_epoch) {
      c10::List<int64_t> rest;
      for (size_t i : *s.rest_of_epoch) rest.push_back(static_cast<int64_t>(i));
      d.insert("rest_of_epoch", rest);
    }
  }
  return d;
}

namespace {

// A saved sampler state, checked against the live sampler's settings.
struct SavedPosition {
  uint64_t seed;
  int64_t epoch, position, batches;
  size_t num_replicas;
  std::optional<std::vector<size_t>> rest_of_epoch;
  bool epoch_ended;
};

// The distributed sampler's own fields of a saved state, into `p`.
void parse_distributed(const state::SamplerShared& s, const state::SavedDict& d, int64_t size,
                       SavedPosition& p) {
  const int64_t replicas = d.integer("num_replicas"), rank = d.integer("rank");
  if (replicas < 1 || rank < 0 || rank >= replicas)
    d.fail("rank " + std::to_string(rank) + " of " + std::to_string(replicas));
  // Another number of ranks re-splits the rest of the epoch (distributed.replicated);
  // the same number with another rank is another rank's shard.
  if (replicas == static_cast<int64_t>(s.num_replicas) && rank != static_cast<int64_t>(s.rank)) {
    d.fail("saved as rank " + std::to_string(rank) + " of " + std::to_string(replicas) +
           ", restored as rank " + std::to_string(s.rank) + " of " + std::to_string(s.num_replicas) +
           ": each rank's part of the data would change");
  }
  p.num_replicas = static_cast<size_t>(replicas);
  for (const auto& [key, live] :
       {std::pair<const char*, bool>{"shuffle", s.shuffle}, {"drop_last", s.drop_last}}) {
    if (d.boolean(key) != live) {
      d.fail(std::string("saved with ") + key + "=" + (live ? "false" : "true") + ", this sampler has " +
             key + "=" + (live ? "true" : "false"));
    }
  }
  if (!d.has("rest_of_epoch")) return;
  // An empty list reads back untyped, so check the elements, not the list's type.
  const c10::IValue& rest = d.get("rest_of_epoch");
  if (!rest.isList()) d.fail("'rest_of_epoch' is not a list");
  std::vector<size_t> indices;
  for (const c10::IValue& element : rest.toListRef()) {
    if (!element.isInt()) d.fail("'rest_of_epoch' holds a " + element.tagKind());
    const int64_t i = element.toInt();
    if (i < 0 || i >= size) d.fail("'rest_of_epoch' holds index " + std::to_string(i));
    indices.push_back(static_cast<size_t>(i));
  }
  p.rest_of_epoch = std::move(indices);
}

SavedPosition parse_saved(const state::SamplerShared& s, const c10::IValue& saved) {
  const char* kind_name = s.kind_name();
  const state::SavedDict d(saved, "sampler state");
  const c10::IValue& kind = d.get("kind");
  if (!kind.isString() || kind.toStringRef() != kind_name) {
    d.fail(std::string("saved by a '") + (kind.isString() ? kind.toStringRef() : "?") +
           "' sampler, restored into a '" + kind_name + "' one");
  }
  const int64_t size = d.integer("size");
  if (size != static_cast<int64_t>(s.size)) {
    d.fail("saved for a dataset of " + std::to_string(size) + " samples, this sampler has " +
           std::to_string(s.size));
  }
  SavedPosition p{static_cast<uint64_t>(d.integer("seed")),
                  d.integer("epoch"),
                  d.integer("position"),
                  d.integer("batches"),
                  s.num_replicas,
                  std::nullopt,
                  d.boolean("epoch_ended")};
  if (p.epoch < -1 || p.position < 0 || p.batches < 0) {
    d.fail("epoch " + std::to_string(p.epoch) + ", position " + std::to_string(p.position) + ", batches " +
           std::to_string(p.batches) + " (expected epoch >= -1 and no negative counts)");
  }
  if (s.kind == state::SamplerShared::Kind::kDistributed) parse_distributed(s, d, size, p);
  return p;
}

}  // namespace

void ResumableSampler::check(const c10::IValue& saved) const {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  parse_saved(*shared_, saved);
}

void ResumableSampler::restore(const c10::IValue& saved) {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  Shared& s = *shared_;
  const SavedPosition p = parse_saved(s, saved);
  s.seed = p.seed;
  s.epoch = p.epoch;
  s.position = static_cast<size_t>(p.position);
  s.batches = p.batches;
  s.rest_of_epoch = p.rest_of_epoch;
  if (p.num_replicas != s.num_replicas && p.epoch >= 0) {
    // Every rank consumed as many samples (one batch per step): the job consumed
    // position × saved ranks of the fitted order. The rest is this epoch's order now.
    std::vector<size_t> all = s.fitted(s.global_order(p.epoch), p.num_replicas);
    const size_t consumed = std::min(all.size(), s.position * p.num_replicas);
    s.rest_of_epoch = std::vector<size_t>(all.begin() + static_cast<std::ptrdiff_t>(consumed), all.end());
    s.position = 0;
    s.batches = 0;
  }
  s.unconsumed.clear();
  s.order.clear();
  s.handed_out = 0;
  // Nothing to resume before the first epoch, nor once the loop ended the
  // epoch (the next reset() starts the next one).
  s.resume_pending = p.epoch >= 0 && !p.epoch_ended;
  s.epoch_ended = p.epoch_ended;
}

void ResumableSampler::save(torch::serialize::OutputArchive& archive) const {
  archive.write(kArchiveKey, state());
}

void ResumableSampler::load(torch::serialize::InputArchive& archive) {
  c10::IValue saved;
  archive.read(kArchiveKey, saved);
  restore(saved);
}

namespace {

std::shared_ptr<state::SamplerShared> make_shared_state(state::SamplerShared::Kind kind, size_t size,
                                                        std::optional<uint64_t> seed) {
  if (seed && *seed >= (uint64_t{1} << 63)) {
    throw Error("ResumableSampler: seed " + std::to_string(*seed) +
                " (expected below 2^63, so that it is a non-negative int in Python)");
  }
  auto s = std::make_shared<state::SamplerShared>();
  s->kind = kind;
  s->size = size;
  s->seed = seed ? *seed : seed_from_default_generator();
  return s;
}

}  // namespace

ResumableRandomSampler::ResumableRandomSampler(size_t size, std::optional<uint64_t> seed)
    : ResumableSampler(make_shared_state(Shared::Kind::kRandom, size, seed)) {}

ResumableSequentialSampler::ResumableSequentialSampler(size_t size)
    : ResumableSampler(make_shared_state(Shared::Kind::kSequential, size, uint64_t{0})) {}

ResumableDistributedSampler::ResumableDistributedSampler(size_t size, size_t num_replicas, size_t rank,
                                                         Options options)
    : ResumableSampler([&] {
        if (num_replicas == 0 || rank >= num_replicas) {
          throw Error("ResumableDistributedSampler: rank " + std::to_string(rank) + " of " +
                      std::to_string(num_replicas) + " replicas (expected 0 <= rank < num_replicas)");
        }
        // Seed 0 by default, as Python's: the same on every rank.
        auto s = make_shared_state(Shared::Kind::kDistributed, size, options.seed.value_or(0));
        s->num_replicas = num_replicas;
        s->rank = rank;
        s->shuffle = options.shuffle;
        s->drop_last = options.drop_last;
        return s;
      }()) {}

}  // namespace autosnap
