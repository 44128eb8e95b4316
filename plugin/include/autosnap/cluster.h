#pragma once

/// Multi-rank jobs that already have a c10d store (the one their own process
/// group was built on). Not included by autosnap.h: it brings in c10d.
///
///   auto store = c10::make_intrusive<c10d::TCPStore>(master_addr, options);
///   auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, ...);
///   autosnap::Snapshotter::Options options;
///   options.job_store = autosnap::job_store(store);
///   auto snap = autosnap::Snapshotter::from_config("autosnap.yaml", options);
///
/// autosnap then forms its own Gloo groups under a key prefix of that store
/// instead of serving a TCPStore of its own (at a port it publishes in the
/// snapshot directory, or at distributed.port): no second port. It never
/// issues collectives on the job's process group. Ranks still come from the
/// launcher's environment.

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <memory>

#include "autosnap/export.h"

namespace gloo {
namespace transport {
class Device;
}
}  // namespace gloo

namespace autosnap {

/// A job's c10d store lent to a Snapshotter (Snapshotter::Options::job_store).
struct JobStore {
  c10::intrusive_ptr<c10d::Store> store;
};

inline std::shared_ptr<const JobStore> job_store(c10::intrusive_ptr<c10d::Store> store) {
  return std::make_shared<const JobStore>(JobStore{std::move(store)});
}

/// The Gloo device autosnap's own groups bind, for the job's groups too
/// (ProcessGroupGloo::Options::devices): the interface GLOO_SOCKET_IFNAME
/// names (LibTorch's C++ API ignores that variable), else the one that
/// routes to MASTER_ADDR (loopback when every rank runs on this host). Not
/// createDefaultDevice(), which binds loopback where the host name resolves
/// to 127.0.1.1 (Debian's /etc/hosts), so peers on other nodes hang. Throws
/// ConfigError / CoordinationError naming the variable or the address.
AUTOSNAP_API std::shared_ptr<::gloo::transport::Device> gloo_device();

}  // namespace autosnap
