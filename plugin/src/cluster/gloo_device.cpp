#include "cluster/gloo_device.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <sys/socket.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>

#include "autosnap/errors.h"

namespace autosnap {
namespace cluster {
namespace {

std::string host_name() {
  char name[256] = {0};
  return ::gethostname(name, sizeof(name) - 1) == 0 ? name : "this host";
}

// IPv4 addresses by interface name.
std::map<std::string, std::string> interfaces() {
  std::map<std::string, std::string> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN] = {0};
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof text);
    out.emplace(i->ifa_name, text);
  }
  ::freeifaddrs(list);
  return out;
}

std::string interface_list() {
  std::string out;
  for (const auto& [name, address] : interfaces()) out += (out.empty() ? "" : ", ") + name + " " + address;
  return out.empty() ? "none with an IPv4 address" : out;
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

// The local address the kernel would send from to reach `host` (a UDP
// connect sends nothing). Empty when there is no route.
std::string source_address_towards(const std::string& host, bool name_must_resolve) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), "9", &hints, &found);
  if (rc != 0) {
    if (!name_must_resolve) return "";
    throw CoordinationError("MASTER_ADDR '" + host + "' does not resolve to an IPv4 address on " + host_name() +
                            ": " + ::gai_strerror(rc));
  }
  std::string out;
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    sockaddr_in local{};
    socklen_t length = sizeof local;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0) {
      char text[INET_ADDRSTRLEN] = {0};
      ::inet_ntop(AF_INET, &local.sin_addr, text, sizeof text);
      out = text;
    }
  }
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(found);
  return out;
}

}  // namespace

GlooDevice choose_gloo_device(const std::string& master_addr, bool single_node) {
  GlooDevice chosen;
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') {
    const auto all = interfaces();
    const auto it = all.find(ifname);
    if (it == all.end()) {
      throw ConfigError("environment variable GLOO_SOCKET_IFNAME='" + std::string(ifname) + "': " + host_name() +
                        " has no interface of that name with an IPv4 address (it has: " + interface_list() + ")");
    }
    chosen.device = c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
    chosen.address = it->second;
    chosen.how = "GLOO_SOCKET_IFNAME=" + std::string(ifname);
    return chosen;
  }
  chosen.address = source_address_towards(master_addr, /*name_must_resolve=*/true);
  chosen.how = "the interface that routes to MASTER_ADDR " + master_addr;
  if (chosen.address.empty()) {
    throw CoordinationError("no route from " + host_name() + " to MASTER_ADDR " + master_addr +
                            " (interfaces: " + interface_list() + "); set GLOO_SOCKET_IFNAME to the one to use");
  }
  if (is_loopback(chosen.address) && !(single_node || is_loopback(master_addr))) {
    // MASTER_ADDR names this host and resolves to loopback (Debian's 127.0.1.1):
    // peers on other nodes could not reach that.
    chosen.address = source_address_towards("192.0.2.1", /*name_must_resolve=*/false);  // TEST-NET-1: the default route
    chosen.how = "the interface with the default route (MASTER_ADDR " + master_addr + " is loopback here)";
    if (chosen.address.empty() || is_loopback(chosen.address)) {
      throw CoordinationError("MASTER_ADDR " + master_addr + " resolves to a loopback address on " + host_name() +
                              ", which ranks on other nodes cannot reach, and there is no default route (interfaces: " +
                              interface_list() + "); set GLOO_SOCKET_IFNAME to the interface to use");
    }
  }
  chosen.device = c10d::ProcessGroupGloo::createDeviceForHostname(chosen.address);
  return chosen;
}

}  // namespace cluster
}  // namespace autosnap
