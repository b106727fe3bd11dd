// Shared helpers for the vmnat addon: errno → JS Error conversion and socket buffer sizing.
#pragma once

#include <napi.h>

#include <string>

namespace vmnat {

// Socket buffer size we ask for. SO_*BUFFORCE (root) ignores net.core.{w,r}mem_max; without
// privilege the kernel caps the plain option at that sysctl. ≥ 1 MiB measurably raised 64 KiB
// frame rates (shared/notes/node-io.md).
constexpr int kSocketBufferBytes = 4 << 20;

// The errno's symbolic name ("EADDRINUSE"), via libuv's table.
const char* ErrnoName(int err);

// An Error whose `code` is the errno name and `syscall` the failing call, like Node's own.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& path = "");

// Throws ErrnoError as a pending JS exception (we build without C++ exceptions).
void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& path = "");

void ThrowType(Napi::Env env, const char* message);

// Enlarges SO_SNDBUF/SO_RCVBUF, forcing past the sysctl caps when privileged. Best effort.
void EnlargeSocketBuffers(int fd);

}  // namespace vmnat
