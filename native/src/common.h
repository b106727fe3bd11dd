// Shared helpers for the vmnat addon: errno → JS Error conversion and socket buffer sizing.
#pragma once

#include <napi.h>

#include <string>

#include "platform.h"

namespace vmnat {

// Socket buffer size we ask for. SO_*BUFFORCE (root, Linux) ignores net.core.{w,r}mem_max;
// without privilege Linux caps the plain option at that sysctl. ≥ 1 MiB measurably raised 64 KiB
// frame rates (shared/notes/node-io.md). On macOS a unix datagram socket's SO_SNDBUF is also the
// largest datagram it may send, and its SO_RCVBUF the most it may hold; the defaults
// (net.local.dgram.maxdgram = 2048, net.local.dgram.recvspace) are too small for a 1,514-byte
// frame burst, let alone krunkit's 64 KiB offloaded frames, so we always set both.
constexpr int kSocketBufferBytes = 4 << 20;

// The smallest buffer we settle for when the system refuses more (macOS: kern.ipc.maxsockbuf):
// one 64 KiB frame plus its Ethernet header and some slack.
constexpr int kMinSocketBufferBytes = 128 << 10;

// The errno's symbolic name ("EADDRINUSE"), via libuv's table.
const char* ErrnoName(int err);

// An Error whose `code` is the errno name and `syscall` the failing call, like Node's own.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& path = "");

// Throws ErrnoError as a pending JS exception (we build without C++ exceptions).
void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& path = "");

void ThrowType(Napi::Env env, const char* message);

// Enlarges SO_SNDBUF/SO_RCVBUF. Linux: forcing past the sysctl caps when privileged. Elsewhere:
// the largest size the system accepts, halving from kSocketBufferBytes down to
// kMinSocketBufferBytes (BSD refuses an oversize request with ENOBUFS rather than capping it).
// Best effort: socketBufferSizes() tells JS what we got.
void EnlargeSocketBuffers(int fd);

}  // namespace vmnat
