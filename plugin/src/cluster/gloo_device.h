#pragma once

// Which network interface Gloo binds. LibTorch's C++ API picks the address
// the host's own name resolves to (createDefaultDevice), which is loopback on
// Debian's default /etc/hosts (127.0.1.1): the peers on other nodes then
// cannot connect and wait past every timeout. And it ignores
// GLOO_SOCKET_IFNAME, which only PyTorch's Python layer reads. So:
//   1. GLOO_SOCKET_IFNAME, when set: that interface (an error naming it and
//      the interfaces there are when it has no address);
//   2. else the local address that routes to MASTER_ADDR (loopback when
//      MASTER_ADDR is this host and every rank runs here);
//   3. else, when that is a loopback address but the job spans nodes (the
//      host name resolves to 127.0.1.1), the address of the interface with
//      the default route.

#include <memory>
#include <string>

namespace gloo {
namespace transport {
class Device;
}
}  // namespace gloo

namespace autosnap {
namespace cluster {

struct GlooDevice {
  std::shared_ptr<::gloo::transport::Device> device;
  std::string address;  ///< the address it binds, e.g. "10.77.0.12"
  std::string how;      ///< "GLOO_SOCKET_IFNAME=eth0", "routes to node1", ... for messages
};

/// `single_node`: every rank of the job runs on this host.
GlooDevice choose_gloo_device(const std::string& master_addr, bool single_node);

}  // namespace cluster
}  // namespace autosnap
