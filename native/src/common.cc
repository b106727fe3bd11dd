#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

namespace vmnat {

const char* ErrnoName(int err) {
  // On Unix libuv's error codes are negated errnos, so its name table covers every errno Node knows.
  return uv_err_name(-err);
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& path) {
  std::string msg = std::string(ErrnoName(err)) + ": " + strerror(err) + ", " + syscall;
  if (!path.empty()) msg += " '" + path + "'";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (!path.empty()) e.Set("path", Napi::String::New(env, path));
  return e;
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& path) {
  ErrnoError(env, err, syscall, path).ThrowAsJavaScriptException();
}

void ThrowType(Napi::Env env, const char* message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
}

// A buffer someone (the VM launcher that handed us an fd) already made at least this large is
// left alone: asking again could only shrink it.
static bool LargeEnough(int fd, int opt) {
  int cur = 0;
  socklen_t len = sizeof cur;
  return getsockopt(fd, SOL_SOCKET, opt, &cur, &len) == 0 && cur >= kSocketBufferBytes;
}

// Non-blocking (if asked) and close-on-exec, for a descriptor opened or inherited without them.
static int SetFdFlags(int fd, bool nonblocking) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -1;
  if (nonblocking && !(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  int fdfl = fcntl(fd, F_GETFD);
  if (fdfl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0) return -1;
  return 0;
}

#if VMNAT_LINUX

void EnlargeSocketBuffers(int fd) {
  const int size = kSocketBufferBytes;
  if (!LargeEnough(fd, SO_SNDBUF) && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  }
  if (!LargeEnough(fd, SO_RCVBUF) && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
}

int OpenSocket(int domain, int type, int protocol, bool nonblocking) {
  return socket(domain, type | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), protocol);
}

int OpenSocketpair(int domain, int type, bool nonblocking, int sv[2]) {
  return socketpair(domain, type | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0, sv);
}

int PrepareFd(int fd, bool nonblocking) {
  return SetFdFlags(fd, nonblocking);
}

#else  // portable: macOS, and the VMNAT_PORTABLE build on Linux

static void EnlargeOne(int fd, int opt) {
  if (LargeEnough(fd, opt)) return;
  for (int size = kSocketBufferBytes; size >= kMinSocketBufferBytes; size /= 2) {
    if (setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size) == 0) return;
  }
}

void EnlargeSocketBuffers(int fd) {
  EnlargeOne(fd, SO_SNDBUF);
  EnlargeOne(fd, SO_RCVBUF);
}

int PrepareFd(int fd, bool nonblocking) {
  if (SetFdFlags(fd, nonblocking) != 0) return -1;
#ifdef SO_NOSIGPIPE
  // No MSG_NOSIGNAL on macOS: the socket itself must not raise SIGPIPE. Not a socket (ENOTSOCK)
  // is fine: the option is only for sockets.
  const int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof on);
#endif
  return 0;
}

int OpenSocket(int domain, int type, int protocol, bool nonblocking) {
  int fd = socket(domain, type, protocol);
  if (fd < 0) return -1;
  if (PrepareFd(fd, nonblocking) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

int OpenSocketpair(int domain, int type, bool nonblocking, int sv[2]) {
  if (socketpair(domain, type, 0, sv) != 0) return -1;
  if (PrepareFd(sv[0], nonblocking) != 0 || PrepareFd(sv[1], nonblocking) != 0) {
    int err = errno;
    close(sv[0]);
    close(sv[1]);
    errno = err;
    return -1;
  }
  return 0;
}

#endif

}  // namespace vmnat
