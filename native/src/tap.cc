// TAP devices, optionally inside another network namespace.
//
// A TAP is created by TUNSETIFF in the network namespace of the *calling thread*. To open one in a
// guest's namespace without moving the process, a short-lived std::thread setns()es into it, opens
// /dev/net/tun there (the device node lives in the mount namespace, which is unchanged), creates
// or attaches the device, brings it up through an AF_INET socket of that namespace, and exits. The
// namespace of every other thread — the event loop's in particular — is never touched, and the fd
// keeps working from any thread once opened. Needs CAP_NET_ADMIN (and CAP_SYS_ADMIN for setns).
//
// The device is not made persistent: a device we created disappears when the fd closes; a
// persistent device made beforehand (ip tuntap add) stays.
//
// Linux only (VMNAT_HAVE_TAP, platform.h): macOS has neither TAP devices nor network namespaces,
// and the portable build leaves them out as macOS does. There tapOpen throws an Error with code
// ENOTSUP naming the platform; the CLI refuses --tap before it gets that far.
#include "common.h"

#if VMNAT_HAVE_TAP
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

namespace vmnat {

namespace {

struct TapResult {
  int fd = -1;
  int err = 0;
  const char* syscall = "";
  std::string errPath;
  std::string name;
};

void Fail(TapResult* r, int err, const char* syscall, const std::string& path) {
  r->err = err;
  r->syscall = syscall;
  r->errPath = path;
}

// Runs on whichever thread sits in the target namespace.
void OpenTapHere(const std::string& name, bool vnetHdr, TapResult* r) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return Fail(r, errno, "open", "/dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  // IFF_VNET_HDR: every frame carries a 10-byte virtio_net_hdr, so we can hand the kernel one
  // large TCP frame with GSO fields instead of ~45 MTU-sized writes.
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnetHdr ? IFF_VNET_HDR : 0);
  memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int err = errno;
    close(fd);
    return Fail(r, err, "ioctl(TUNSETIFF)", name);
  }
  if (vnetHdr) {
    // Receive offloads: the guest's kernel may hand us one TCP/IPv4 or TCP/IPv6 frame of up to 64 KiB (TSO4, TSO6)
    // with its checksum left partial (CSUM); the FramePort completes such checksums, so the stack
    // sees ordinary (large) segments and reads ~45 times fewer frames.
    int hdrSize = 10;
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdrSize) != 0 ||
        ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)) != 0) {
      int err = errno;
      close(fd);
      return Fail(r, err, "ioctl(TUNSETOFFLOAD)", name);
    }
  }
  r->name.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));

  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    int err = errno;
    close(fd);
    return Fail(r, err, "socket", "");
  }
  struct ifreq fl;
  memset(&fl, 0, sizeof fl);
  memcpy(fl.ifr_name, ifr.ifr_name, IFNAMSIZ);
  int err = 0;
  const char* call = "";
  if (ioctl(s, SIOCGIFFLAGS, &fl) != 0) {
    err = errno;
    call = "ioctl(SIOCGIFFLAGS)";
  } else if (!(fl.ifr_flags & IFF_UP)) {
    fl.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &fl) != 0) {
      err = errno;
      call = "ioctl(SIOCSIFFLAGS)";
    }
  }
  close(s);
  if (err != 0) {
    close(fd);
    return Fail(r, err, call, r->name);
  }
  r->fd = fd;
}

void OpenTapInNetns(const std::string& name, const std::string& nsPath, bool vnetHdr, TapResult* r) {
  int ns = open(nsPath.c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0) return Fail(r, errno, "open", nsPath);
  if (setns(ns, CLONE_NEWNET) != 0) {
    int err = errno;
    close(ns);
    return Fail(r, err, "setns", nsPath);
  }
  close(ns);
  OpenTapHere(name, vnetHdr, r);
}

}  // namespace

// tapOpen(name, netnsPath?, netnsPid?, vnetHdr?) → { fd, name }
static Napi::Value TapOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    ThrowType(env, "tapOpen: name must be a string");
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (name.size() >= IFNAMSIZ) {
    ThrowErrno(env, ENAMETOOLONG, "tapOpen", name);
    return env.Undefined();
  }
  std::string nsPath;
  if (info.Length() > 1 && info[1].IsString()) nsPath = info[1].As<Napi::String>().Utf8Value();
  if (nsPath.empty() && info.Length() > 2 && info[2].IsNumber()) {
    int pid = info[2].As<Napi::Number>().Int32Value();
    if (pid <= 0) {
      ThrowType(env, "tapOpen: netnsPid must be a positive integer");
      return env.Undefined();
    }
    nsPath = "/proc/" + std::to_string(pid) + "/ns/net";
  }

  const bool vnetHdr = info.Length() > 3 && info[3].ToBoolean().Value();
  TapResult r;
  if (nsPath.empty()) {
    OpenTapHere(name, vnetHdr, &r);
  } else {
    std::thread t(OpenTapInNetns, std::cref(name), std::cref(nsPath), vnetHdr, &r);
    t.join();
  }
  if (r.fd < 0) {
    ThrowErrno(env, r.err, r.syscall, r.errPath);
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, r.fd));
  out.Set("name", Napi::String::New(env, r.name));
  return out;
}

void InitTap(Napi::Env env, Napi::Object exports) {
  exports.Set("tapOpen", Napi::Function::New(env, TapOpen, "tapOpen"));
}

}  // namespace vmnat

#else  // no TAP: macOS, and the portable build

namespace vmnat {

static Napi::Value TapOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#ifdef __APPLE__
  const char* where = "macOS";
#else
  const char* where = "the portable build (VMNAT_PORTABLE)";
#endif
  Napi::Error e = Napi::Error::New(
      env, std::string("ENOTSUP: TAP devices and network namespaces are Linux-only; not available on ") +
               where);
  e.Set("code", Napi::String::New(env, "ENOTSUP"));
  e.Set("syscall", Napi::String::New(env, "tapOpen"));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

void InitTap(Napi::Env env, Napi::Object exports) {
  exports.Set("tapOpen", Napi::Function::New(env, TapOpen, "tapOpen"));
}

}  // namespace vmnat

#endif
