// Platform guards for the addon: one place decides which system calls each build may use.
//
// Theory of operation
//   VMNAT_LINUX is 1 on a normal Linux build and 0 on macOS and in the portable build (node-gyp
//   defines VMNAT_PORTABLE from native/portable/binding.gyp). Code under `#if VMNAT_LINUX` may use
//   Linux-only calls and flags (recvmmsg/sendmmsg, SOCK_NONBLOCK|SOCK_CLOEXEC, MSG_NOSIGNAL,
//   SO_*BUFFORCE, IP_RECVERR, abstract unix addresses); the `#else` branch beside it is what macOS
//   runs, and the portable build runs the same branch on Linux so that CI exercises the macOS I/O
//   path. VMNAT_HAVE_TAP is 1 only on a normal Linux build: TAP devices and network namespaces
//   have no portable equivalent (macOS has neither), so the portable build leaves them out exactly
//   as macOS does, and tapOpen throws ENOTSUP there.
//   Nothing here changes behaviour visible to JS except tapOpen and `build` (addon.cc).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>

#if defined(__linux__) && !defined(VMNAT_PORTABLE)
#define VMNAT_LINUX 1
#define VMNAT_HAVE_TAP 1
#else
#define VMNAT_LINUX 0
#define VMNAT_HAVE_TAP 0
#endif

#if !defined(__linux__) && !defined(__APPLE__)
#error "vmnat's addon supports Linux and macOS"
#endif

// MAP_NORESERVE is a Linux hint (do not reserve swap for the slab); elsewhere plain anonymous
// memory is committed lazily anyway.
#if !VMNAT_LINUX || !defined(MAP_NORESERVE)
#define VMNAT_MAP_NORESERVE 0
#else
#define VMNAT_MAP_NORESERVE MAP_NORESERVE
#endif

#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif

namespace vmnat {

// "linux" or "portable": which branch of the guards this addon was built with.
#if VMNAT_LINUX
constexpr const char* kBuildFlavor = "linux";
#else
constexpr const char* kBuildFlavor = "portable";
#endif

// socket()/socketpair() that come back non-blocking (if asked) and close-on-exec. Linux sets both
// atomically with SOCK_NONBLOCK|SOCK_CLOEXEC; elsewhere fcntl sets them right after (a fork in
// between could leak the fd into a child: the addon creates sockets on the main thread only,
// where Node does not fork behind our back). Datagram and stream sockets also get SO_NOSIGPIPE
// where MSG_NOSIGNAL is missing. Return -1 with errno set on failure.
int OpenSocket(int domain, int type, int protocol, bool nonblocking);
int OpenSocketpair(int domain, int type, bool nonblocking, int sv[2]);

// Sets O_NONBLOCK and FD_CLOEXEC (and SO_NOSIGPIPE on a socket, where it exists). 0 or -1/errno.
int PrepareFd(int fd, bool nonblocking);

// send()/sendmsg() flags that keep a dead peer from raising SIGPIPE: MSG_NOSIGNAL on Linux; 0
// elsewhere, where the socket carries SO_NOSIGPIPE instead (Node ignores SIGPIPE too).
#if VMNAT_LINUX
constexpr int kSendNoSignal = MSG_NOSIGNAL;
#else
constexpr int kSendNoSignal = 0;
#endif

}  // namespace vmnat
