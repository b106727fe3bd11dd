// AF_UNIX datagram sockets and descriptor helpers (see sockets.cc).
#pragma once

#include <napi.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <string>

namespace vmnat {

// Fills a sockaddr_un from a path; a leading '@' names an abstract address. False if too long/empty.
bool FillUnixAddr(const std::string& path, sockaddr_un* sa, socklen_t* len);

// The inverse: "" for an unnamed socket, "@name" for an abstract one.
std::string FormatUnixAddr(const sockaddr_un& sa, socklen_t len);

void InitSockets(Napi::Env env, Napi::Object exports);

}  // namespace vmnat
