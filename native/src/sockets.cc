// AF_UNIX datagram sockets, socketpairs and fd flags: the parts of the socket API Node core lacks
// (dgram has no unix_dgram; net.Socket rejects datagram fds). Every socket we create is
// non-blocking and close-on-exec (platform.h: atomically on Linux, by fcntl elsewhere), with
// enlarged buffers; callers clear CLOEXEC on the fds they mean to hand to a child.
// Abstract addresses ("@name") exist on Linux only; in the portable build and on macOS a leading
// '@' is refused with EAFNOSUPPORT rather than silently becoming a file name.
#include "sockets.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

namespace vmnat {

bool FillUnixAddr(const std::string& path, sockaddr_un* sa, socklen_t* len) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa->sun_path) return false;
#if VMNAT_LINUX
  if (path[0] == '@') {
    // Abstract namespace: leading NUL, no terminator, length counts exactly the name.
    memcpy(sa->sun_path + 1, path.data() + 1, path.size() - 1);
    *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
    return true;
  }
#endif
  memcpy(sa->sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
#ifdef __APPLE__
  sa->sun_len = static_cast<uint8_t>(*len);  // BSD sockaddrs carry their own length
#endif
  return true;
}

std::string FormatUnixAddr(const sockaddr_un& sa, socklen_t len) {
  const size_t base = offsetof(sockaddr_un, sun_path);
  if (len <= base) return "";
  size_t n = len - base;
  if (n > sizeof sa.sun_path) n = sizeof sa.sun_path;
  if (sa.sun_path[0] == '\0') return "@" + std::string(sa.sun_path + 1, n - 1);
  return std::string(sa.sun_path, strnlen(sa.sun_path, n));
}

static bool GetFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    ThrowType(info.Env(), "fd must be a number");
    return false;
  }
  *fd = info[i].As<Napi::Number>().Int32Value();
  return true;
}

static bool GetPath(const Napi::CallbackInfo& info, size_t i, const char* syscall, std::string* path,
                    sockaddr_un* sa, socklen_t* len) {
  if (info.Length() <= i || !info[i].IsString()) {
    ThrowType(info.Env(), "path must be a string");
    return false;
  }
  *path = info[i].As<Napi::String>().Utf8Value();
#if !VMNAT_LINUX
  if (!path->empty() && (*path)[0] == '@') {
    ThrowErrno(info.Env(), EAFNOSUPPORT, syscall, *path);
    return false;
  }
#endif
  if (!FillUnixAddr(*path, sa, len)) {
    ThrowErrno(info.Env(), path->empty() ? EINVAL : ENAMETOOLONG, syscall, *path);
    return false;
  }
  return true;
}

static Napi::Value UnixDgramBind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  sockaddr_un sa;
  socklen_t len;
  if (!GetPath(info, 0, "bind", &path, &sa, &len)) return env.Undefined();
  int fd = OpenSocket(AF_UNIX, SOCK_DGRAM, 0, true);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket");
    return env.Undefined();
  }
  EnlargeSocketBuffers(fd);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "bind", path);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

static Napi::Value UnixDgramConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  std::string path;
  sockaddr_un sa;
  socklen_t len;
  if (!GetFd(info, 0, &fd) || !GetPath(info, 1, "connect", &path, &sa, &len)) return env.Undefined();
  int r;
  do r = connect(fd, reinterpret_cast<sockaddr*>(&sa), len);
  while (r != 0 && errno == EINTR);
  if (r != 0) ThrowErrno(env, errno, "connect", path);
  return env.Undefined();
}

// Is someone serving `path`? A datagram connect succeeds only if a live socket is bound there; a
// file left behind by a dead process gives ECONNREFUSED. EPERM means a live datagram socket
// that is connected to someone else (a guest talking to us); EPROTOTYPE a live socket of another
// type (a stream server). Both are live: nobody must delete them.
static Napi::Value UnixDgramProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  sockaddr_un sa;
  socklen_t len;
  if (!GetPath(info, 0, "connect", &path, &sa, &len)) return env.Undefined();
  int fd = OpenSocket(AF_UNIX, SOCK_DGRAM, 0, false);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket");
    return env.Undefined();
  }
  int r;
  do r = connect(fd, reinterpret_cast<sockaddr*>(&sa), len);
  while (r != 0 && errno == EINTR);
  int err = r == 0 ? 0 : errno;
  close(fd);
  if (err == 0 || err == EPERM || err == EPROTOTYPE) return Napi::Boolean::New(env, true);
  if (err == ECONNREFUSED || err == ENOENT) return Napi::Boolean::New(env, false);
  ThrowErrno(env, err, "connect", path);
  return env.Undefined();
}

static Napi::Value SocketpairDgram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (OpenSocketpair(AF_UNIX, SOCK_DGRAM, true, sv) != 0) {
    ThrowErrno(env, errno, "socketpair");
    return env.Undefined();
  }
  EnlargeSocketBuffers(sv[0]);
  EnlargeSocketBuffers(sv[1]);
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, sv[0]));
  out.Set(1u, Napi::Number::New(env, sv[1]));
  return out;
}

static Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  bool on = info.Length() < 2 || info[1].ToBoolean().Value();
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0 || fcntl(fd, F_SETFD, on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC)) < 0) {
    ThrowErrno(env, errno, "fcntl");
  }
  return env.Undefined();
}

// setNonblocking(fd, on = true): a child given one end of a socketpair usually wants it blocking.
static Napi::Value SetNonblocking(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  bool on = info.Length() < 2 || info[1].IsUndefined() || info[1].ToBoolean().Value();
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK)) < 0) {
    ThrowErrno(env, errno, "fcntl");
  }
  return env.Undefined();
}

static Napi::Value FdSocketType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    if (errno == ENOTSOCK) return Napi::String::New(env, "other");
    ThrowErrno(env, errno, "getsockopt");
    return env.Undefined();
  }
  switch (type) {
    case SOCK_DGRAM: return Napi::String::New(env, "dgram");
    case SOCK_STREAM: return Napi::String::New(env, "stream");
    case SOCK_SEQPACKET: return Napi::String::New(env, "seqpacket");
    default: return Napi::String::New(env, "other");
  }
}

static Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  // Linux releases the descriptor even when close() reports EINTR: never retry.
  if (close(fd) != 0 && errno != EINTR) ThrowErrno(env, errno, "close");
  return env.Undefined();
}

// A second descriptor for the same open socket, close-on-exec. Lets JS re-wrap a socket that
// Node accepted (closing Node's descriptor then leaves the connection open on ours).
static Napi::Value DupFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) {
    ThrowErrno(env, errno, "dup");
    return env.Undefined();
  }
  return Napi::Number::New(env, copy);
}

// socketBufferSizes(fd) → { snd, rcv }: what the kernel granted (Linux reports twice the request:
// its bookkeeping allowance). On macOS SO_SNDBUF bounds the largest datagram the socket can send.
static Napi::Value SocketBufferSizes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  int snd = 0, rcv = 0;
  socklen_t len = sizeof snd;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, &len) != 0) {
    ThrowErrno(env, errno, "getsockopt");
    return env.Undefined();
  }
  len = sizeof rcv;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, &len) != 0) {
    ThrowErrno(env, errno, "getsockopt");
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("snd", Napi::Number::New(env, snd));
  out.Set("rcv", Napi::Number::New(env, rcv));
  return out;
}

void InitSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("socketBufferSizes", Napi::Function::New(env, SocketBufferSizes, "socketBufferSizes"));
  exports.Set("dupFd", Napi::Function::New(env, DupFd, "dupFd"));
  exports.Set("unixDgramBind", Napi::Function::New(env, UnixDgramBind, "unixDgramBind"));
  exports.Set("unixDgramConnect", Napi::Function::New(env, UnixDgramConnect, "unixDgramConnect"));
  exports.Set("unixDgramProbe", Napi::Function::New(env, UnixDgramProbe, "unixDgramProbe"));
  exports.Set("socketpairDgram", Napi::Function::New(env, SocketpairDgram, "socketpairDgram"));
  exports.Set("setCloexec", Napi::Function::New(env, SetCloexec, "setCloexec"));
  exports.Set("setNonblocking", Napi::Function::New(env, SetNonblocking, "setNonblocking"));
  exports.Set("fdSocketType", Napi::Function::New(env, FdSocketType, "fdSocketType"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
}

}  // namespace vmnat
