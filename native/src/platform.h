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
//   Nothing here changes behaviour visible to JS except tapOpen, `build` and icmpClassify.
//
// Every guard, and what its non-Linux branch does (the one macOS runs):
//   common.cc  OpenSocket/OpenSocketpair: socket()+fcntl(O_NONBLOCK, FD_CLOEXEC)+SO_NOSIGPIPE
//              instead of SOCK_NONBLOCK|SOCK_CLOEXEC. PrepareFd: the same for an existing fd.
//              EnlargeSocketBuffers: SO_SNDBUF/SO_RCVBUF halving from 4 MiB to 128 KiB until the
//              system accepts (no SO_*BUFFORCE; BSD refuses oversize requests with ENOBUFS).
//   platform.h kSendNoSignal: 0 (SO_NOSIGPIPE on the socket) instead of MSG_NOSIGNAL;
//              VMNAT_MAP_NORESERVE: 0 instead of MAP_NORESERVE for the receive slab.
//   frame_port RecvBatch: a recvmsg loop over the same MsgVec array instead of recvmmsg; an error
//              after the first datagram is kept for the next round. SendBatch: a sendmsg loop
//              instead of sendmmsg, same partial-count contract. Inherited dgram fds get
//              SO_NOSIGPIPE. LearnFrom: an empty sun_path is an unnamed sender (macOS reports
//              one that way). (ENOBUFS from a full receiver drops that one frame, as on Linux.)
//   sockets.cc FillUnixAddr: no abstract "@name" addresses ('@' paths refused: EAFNOSUPPORT);
//              sun_len set on Apple.
//   tap.cc     VMNAT_HAVE_TAP 0: no TAP, no setns; tapOpen throws ENOTSUP naming the platform.
//   hostif.cc  VMNAT_HAVE_TAP 0: ifSetIpv4/ifAddToBridge (host-only and bridged modes) throw ENOTSUP.
//   vmnet.cc   macOS only (not the portable build): vmnet.framework for --mode host|bridged;
//              elsewhere no `Vmnet` export at all (Apple's framework cannot be linked on Linux).
//   icmp.cc    no IP_RECVERR/error queue (ICMP errors are read in-band from the socket); TTL by
//              setsockopt(IP_TTL) when it changes instead of a per-send IP_TTL cmsg; our own
//              identifier and checksum written into each request (macOS assigns neither);
//              received datagrams classified by ClassifyIcmp (IP header stripped if present,
//              replies and errors filtered by our identifier); TTL from the IP header or an
//              IP_TTL/IP_RECVTTL cmsg.
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
