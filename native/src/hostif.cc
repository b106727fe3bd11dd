// Host-side interfaces for vmnat's host-only and bridged modes (src/modes/): give a TAP an IPv4
// address, or enslave it to an existing Linux bridge.
//
// Theory of operation: both are one or two classic ioctls on an AF_INET datagram socket of the
// calling thread's network namespace (vmnat's own: the host side of a host-only network is the
// host, and a bridge is found where vmnat runs), the same calls `ifconfig` and `brctl` make:
//   ifSetIpv4(name, addr, prefixLen)   SIOCSIFADDR then SIOCSIFNETMASK: the kernel adds the
//                                      connected route of the prefix itself.
//   ifAddToBridge(name, bridge)        SIOCBRADDIF on the bridge with the TAP's ifindex.
// No netlink: nothing here needs more than these two, and they need only CAP_NET_ADMIN.
//
// Linux only (VMNAT_HAVE_TAP, platform.h): macOS has no TAP devices (its host-only and bridged
// modes go through vmnet.framework, vmnet.cc); there, and in the portable build, both throw
// ENOTSUP as tapOpen does.
#include "common.h"

#if VMNAT_HAVE_TAP
#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace vmnat {

namespace {

bool NameArg(const Napi::CallbackInfo& info, size_t i, const char* fn, std::string* out) {
  if (info.Length() <= i || !info[i].IsString()) {
    ThrowType(info.Env(), (std::string(fn) + ": interface name must be a string").c_str());
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
  if (out->empty() || out->size() >= IFNAMSIZ) {
    ThrowErrno(info.Env(), ENAMETOOLONG, fn, *out);
    return false;
  }
  return true;
}

void SetAddr(struct ifreq* ifr, uint32_t hostOrder) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(hostOrder);
  memcpy(&ifr->ifr_addr, &sin, sizeof sin);
}

}  // namespace

// ifSetIpv4(name, addr (u32, host order), prefixLen) → undefined
static Napi::Value IfSetIpv4(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!NameArg(info, 0, "ifSetIpv4", &name)) return env.Undefined();
  if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsNumber()) {
    ThrowType(env, "ifSetIpv4: addr and prefixLen must be numbers");
    return env.Undefined();
  }
  const uint32_t addr = static_cast<uint32_t>(info[1].As<Napi::Number>().Int64Value());
  const int prefix = info[2].As<Napi::Number>().Int32Value();
  if (prefix < 0 || prefix > 32) {
    ThrowType(env, "ifSetIpv4: prefixLen must be 0..32");
    return env.Undefined();
  }
  const uint32_t mask = prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    ThrowErrno(env, errno, "socket");
    return env.Undefined();
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name.data(), name.size());
  SetAddr(&ifr, addr);
  const char* call = nullptr;
  if (ioctl(s, SIOCSIFADDR, &ifr) != 0) {
    call = "ioctl(SIOCSIFADDR)";
  } else {
    SetAddr(&ifr, mask);
    if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0) call = "ioctl(SIOCSIFNETMASK)";
  }
  int err = errno;
  close(s);
  if (call != nullptr) ThrowErrno(env, err, call, name);
  return env.Undefined();
}

// ifAddToBridge(name, bridge) → undefined
static Napi::Value IfAddToBridge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  std::string bridge;
  if (!NameArg(info, 0, "ifAddToBridge", &name) || !NameArg(info, 1, "ifAddToBridge", &bridge)) return env.Undefined();
  unsigned index = if_nametoindex(name.c_str());
  if (index == 0) {
    ThrowErrno(env, errno, "if_nametoindex", name);
    return env.Undefined();
  }
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    ThrowErrno(env, errno, "socket");
    return env.Undefined();
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, bridge.data(), bridge.size());
  ifr.ifr_ifindex = static_cast<int>(index);
  int rc = ioctl(s, SIOCBRADDIF, &ifr);
  int err = errno;
  close(s);
  // ENODEV: no such interface; EOPNOTSUPP/EINVAL: it exists but is not a bridge.
  if (rc != 0) ThrowErrno(env, err, "ioctl(SIOCBRADDIF)", bridge);
  return env.Undefined();
}

void InitHostIf(Napi::Env env, Napi::Object exports) {
  exports.Set("ifSetIpv4", Napi::Function::New(env, IfSetIpv4, "ifSetIpv4"));
  exports.Set("ifAddToBridge", Napi::Function::New(env, IfAddToBridge, "ifAddToBridge"));
}

}  // namespace vmnat

#else  // macOS and the portable build: vmnet.cc serves these modes there

namespace vmnat {

static Napi::Value NotHere(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Error e = Napi::Error::New(env, "ENOTSUP: host-side TAP interfaces and Linux bridges are Linux-only");
  e.Set("code", Napi::String::New(env, "ENOTSUP"));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

void InitHostIf(Napi::Env env, Napi::Object exports) {
  exports.Set("ifSetIpv4", Napi::Function::New(env, NotHere, "ifSetIpv4"));
  exports.Set("ifAddToBridge", Napi::Function::New(env, NotHere, "ifAddToBridge"));
}

}  // namespace vmnat

#endif
