#pragma once

/// Multi-rank jobs that already have a c10d store (the one their own process
/// group was built on). Not included by autosnap.h: it brings in c10d.
///
///   auto store = c10::make_intrusive<c10d::TCPStore>(master_addr, options);
///   auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, ...);
///   autosnap::use_job_store(store);                    // before the Snapshotter is made
///   auto snap = autosnap::Snapshotter::from_config("autosnap.yaml");
///
/// autosnap then forms its own Gloo groups under a key prefix of that store
/// instead of serving a TCPStore of its own at MASTER_PORT + 1 (no second
/// port). It never issues collectives on the job's process group. Ranks still
/// come from the launcher's environment.

#include <torch/csrc/distributed/c10d/Store.hpp>

namespace autosnap {

/// Snapshotters made from now on in this process coordinate through `store`
/// (null: their own store again). Thread-safe.
void use_job_store(c10::intrusive_ptr<c10d::Store> store);

}  // namespace autosnap
