// HostTcp: the host sockets of dialed TCP flows, read and written by the addon.
//
// Theory of operation
//   A guest connection through the NAT is carried by one host TCP socket. Through Node each such
//   socket is a net.Socket: a stream object, an emitter, a libuv handle, a write request object
//   and a nextTick per write, and several JS frames per read. For a 1-byte round trip that
//   machinery was most of vmnat's user CPU (bench/tcp.ts rr), and each held connection cost a
//   kilobyte of JS heap. Here the addon owns the socket: JS keeps the TCP state machine, the
//   flow and its policy; this file keeps only an fd and a uv_poll_t per socket.
//   - connect(host, port) opens a non-blocking socket (TCP_NODELAY, as vmnat's flows always
//     had) and starts the connect; it returns a slot number, or -errno when the kernel refused at
//     once. The outcome comes as an event: kConnected or kConnectFailed(code) — unless the
//     connect had already completed when connect() returned (a loopback destination: the kernel
//     runs the whole handshake inside the call), which one poll(0) tells; then the slot comes back
//     with kConnectedNow added, reading, and no event follows. That saves the guest's SYN-ACK a
//     whole event-loop turn.
//   - adopt(fd) takes a connected stream socket the caller already has (a port forward's accepted
//     connection, duplicated out of Node's net.Server): same slot and events, not reading until
//     setReading (the forward waits for the guest's handshake before it takes host bytes).
//   - Reading: while the slot is reading (setReading), a readable socket is read into ONE shared
//     buffer (given at construction; JS copies what it keeps before returning) and each read is
//     one event kData(n). A short read ends the round, as libuv's own stream reading does; at
//     most kMaxReads per wake-up keeps one busy flow from starving the others. read() == 0 is
//     kEof (reading stops); an error is kError(code).
//   - Writing: write(slot, bytes) is one send() per call (a loop over EINTR and partial sends)
//     and returns how many bytes the kernel took, or -errno. When it took fewer (EAGAIN), the
//     slot watches for POLLOUT and reports kWritable once; JS keeps the rest and writes again.
//   - shutdownWrite is the guest's FIN; close(slot, reset) sets SO_LINGER 0 first when the host
//     peer must see a RST.
//   Events: every event is one call onEvent(kind, slot, n, code) through napi_make_callback (so
//   nextTicks and promise jobs run after it, as after any Node I/O). An exception thrown by JS
//   goes to napi_fatal_exception ('uncaughtException'), never up through libuv.
//   Lifetime: the socket's uv_poll_t is the first member of its Sock, freed in the handle's close
//   callback; the slot number is free again at once (a late libuv callback sees `closed`). The
//   JS object is pinned (Ref) while any socket is open, because libuv callbacks point at it.
//   Portable build / macOS: OpenSocket (common.cc) sets O_NONBLOCK, FD_CLOEXEC and SO_NOSIGPIPE
//   by fcntl/setsockopt; sends pass kSendNoSignal (MSG_NOSIGNAL on Linux, 0 elsewhere).
#include "host_tcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "common.h"
#include "platform.h"

namespace vmnat {

namespace {
// Reads per wake-up before the loop moves on (level-triggered: it comes back).
constexpr int kMaxReads = 16;
}  // namespace

Napi::Function HostTcp::Init(Napi::Env env) {
  return DefineClass(env, "HostTcp",
                     {
                         InstanceMethod("connect", &HostTcp::Connect),
                         InstanceMethod("adopt", &HostTcp::Adopt),
                         InstanceMethod("write", &HostTcp::Write),
                         InstanceMethod("readNow", &HostTcp::ReadNow),
                         InstanceMethod("shutdownWrite", &HostTcp::ShutdownWrite),
                         InstanceMethod("close", &HostTcp::Close),
                         InstanceMethod("setReading", &HostTcp::SetReading),
                         InstanceMethod("ends", &HostTcp::Ends),
                         InstanceMethod("count", &HostTcp::Count),
                     });
}

HostTcp::HostTcp(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<HostTcp>(info), async_(info.Env(), "vmnat:HostTcp") {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsFunction() || !info[1].IsBuffer()) {
    ThrowType(env, "HostTcp(onEvent, readBuffer)");
    return;
  }
  onEvent_ = Napi::Persistent(info[0].As<Napi::Function>());
  Napi::Buffer<uint8_t> buf = info[1].As<Napi::Buffer<uint8_t>>();
  readRef_ = Napi::Persistent(buf);
  readBuf_ = buf.Data();
  readLen_ = buf.Length();
  if (readLen_ == 0) {
    ThrowType(env, "HostTcp: the read buffer is empty");
    return;
  }
  if (napi_get_uv_event_loop(env, &loop_) != napi_ok || loop_ == nullptr) {
    ThrowType(env, "HostTcp: no event loop");
    return;
  }
  napi_add_env_cleanup_hook(env, EnvCleanup, this);
  cleanupHook_ = true;
}

HostTcp::~HostTcp() { Teardown(); }

void HostTcp::EnvCleanup(void* arg) {
  HostTcp* self = static_cast<HostTcp*>(arg);
  self->cleanupHook_ = false;
  self->Teardown();
}

// Closes every socket without calling JS (exit, or the object collected). Safe to call twice.
void HostTcp::Teardown() {
  if (cleanupHook_) {
    napi_remove_env_cleanup_hook(Env(), EnvCleanup, this);
    cleanupHook_ = false;
  }
  tornDown_ = true;
  for (Sock* s : slots_) {
    if (s != nullptr) CloseSock(s, false);
  }
}

HostTcp::Sock* HostTcp::Get(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) return nullptr;
  int64_t slot = info[i].As<Napi::Number>().Int64Value();
  if (slot < 0 || static_cast<uint64_t>(slot) >= slots_.size()) return nullptr;
  Sock* s = slots_[static_cast<size_t>(slot)];
  return s != nullptr && !s->closed ? s : nullptr;
}

// connect(host: numeric IPv4/IPv6 string, port) → slot >= 0, or -errno (EINVAL: not numeric).
Napi::Value HostTcp::Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsNumber()) {
    ThrowType(env, "connect(host, port)");
    return env.Undefined();
  }
  if (tornDown_) return Napi::Number::New(env, -EBADF);
  std::string host = info[0].As<Napi::String>().Utf8Value();
  uint32_t port = info[1].As<Napi::Number>().Uint32Value();
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (port > 65535) return Napi::Number::New(env, -EINVAL);
  if (inet_pton(AF_INET, host.c_str(), &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof *sin;
  } else if (inet_pton(AF_INET6, host.c_str(), &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof *sin6;
  } else {
    return Napi::Number::New(env, -EINVAL);
  }
#ifdef __APPLE__
  ss.ss_len = static_cast<uint8_t>(len);
#endif
  int fd = OpenSocket(ss.ss_family, SOCK_STREAM, 0, true);
  if (fd < 0) return Napi::Number::New(env, -errno);
  const int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  int r;
  do r = connect(fd, reinterpret_cast<const sockaddr*>(&ss), len);
  while (r != 0 && errno == EINTR);
  if (r != 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    return Napi::Number::New(env, -err);
  }
  bool now = r == 0;
  if (!now) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP))) {
      int err = 0;
      socklen_t elen = sizeof err;
      now = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0;
    }
  }
  const int64_t slot = Install(fd, !now, now);
  return Napi::Number::New(env, static_cast<double>(slot >= 0 && now ? slot + kConnectedNow : slot));
}

// adopt(fd) → slot >= 0, or -errno. The fd is ours from now on, also when adopting fails (closed).
Napi::Value HostTcp::Adopt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    ThrowType(env, "adopt(fd)");
    return env.Undefined();
  }
  const int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) return Napi::Number::New(env, -EBADF);
  if (tornDown_) {
    close(fd);
    return Napi::Number::New(env, -EBADF);
  }
  // Shared with the descriptor it was duplicated from (one open file), which libuv made
  // non-blocking already; set here too so any caller's fd works.
  const int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
    const int err = errno;
    close(fd);
    return Napi::Number::New(env, -err);
  }
  const int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);  // fails harmlessly on a unix socket
  return Napi::Number::New(env, static_cast<double>(Install(fd, false, false)));
}

// A socket into a slot, watched by its own uv_poll_t: the slot, or a negative errno (fd closed).
int64_t HostTcp::Install(int fd, bool connecting, bool reading) {
  Sock* s = new Sock{};
  int ur = uv_poll_init(loop_, &s->poll, fd);
  if (ur != 0) {
    delete s;
    close(fd);
    return ur;  // libuv errors are already negative errnos
  }
  s->poll.data = s;
  s->owner = this;
  s->fd = fd;
  s->connecting = connecting;
  s->reading = reading;
  uint32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
    slots_[slot] = s;
  } else {
    slot = static_cast<uint32_t>(slots_.size());
    slots_.push_back(s);
  }
  s->slot = slot;
  if (open_++ == 0) Ref();  // libuv callbacks point at us from now on
  Update(s);
  return slot;
}

// write(slot, bytes) → bytes the kernel took (maybe fewer: kWritable follows), or -errno.
Napi::Value HostTcp::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Sock* s = Get(info, 0);
  if (s == nullptr) return Napi::Number::New(env, -EBADF);
  if (info.Length() < 2 || !info[1].IsTypedArray()) {
    ThrowType(env, "write(slot, bytes)");
    return env.Undefined();
  }
  Napi::Uint8Array arr = info[1].As<Napi::Uint8Array>();
  const uint8_t* data = arr.Data();
  size_t len = arr.ByteLength();
  size_t done = 0;
  while (done < len) {
    ssize_t n = send(s->fd, data + done, len - done, kSendNoSignal);
    if (n >= 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    return Napi::Number::New(env, -errno);
  }
  if (done < len && !s->wantWrite) {
    s->wantWrite = true;
    Update(s);
  }
  return Napi::Number::New(env, static_cast<double>(done));
}

// readNow(slot) → bytes now in the shared read buffer (> 0), 0 (nothing there, or not reading),
// kReadEof (the peer's FIN: reading stops), or -errno (reading stops). One read() outside the poll
// callback: after a write, a peer on the same CPU has often answered already (it ran while we
// were preempted in send()), and taking the answer now saves a whole event-loop turn.
Napi::Value HostTcp::ReadNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Sock* s = Get(info, 0);
  if (s == nullptr || s->connecting || !s->reading) return Napi::Number::New(env, 0);
  ssize_t n;
  do n = read(s->fd, readBuf_, readLen_);
  while (n < 0 && errno == EINTR);
  if (n > 0) return Napi::Number::New(env, static_cast<double>(n));
  if (n == 0) {
    s->reading = false;
    Update(s);
    return Napi::Number::New(env, kReadEof);
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, 0);
  const int err = errno;
  s->reading = false;
  s->wantWrite = false;
  Update(s);
  return Napi::Number::New(env, -err);
}

Napi::Value HostTcp::ShutdownWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Sock* s = Get(info, 0);
  if (s == nullptr) return Napi::Number::New(env, -EBADF);
  return Napi::Number::New(env, shutdown(s->fd, SHUT_WR) == 0 ? 0 : -errno);
}

// close(slot, reset): the slot is free at once; nothing more is reported for it.
Napi::Value HostTcp::Close(const Napi::CallbackInfo& info) {
  Sock* s = Get(info, 0);
  if (s != nullptr) CloseSock(s, info.Length() > 1 && info[1].ToBoolean().Value());
  return info.Env().Undefined();
}

Napi::Value HostTcp::SetReading(const Napi::CallbackInfo& info) {
  Sock* s = Get(info, 0);
  if (s != nullptr) {
    bool on = info.Length() > 1 && info[1].ToBoolean().Value();
    if (s->reading != on) {
      s->reading = on;
      Update(s);
    }
  }
  return info.Env().Undefined();
}

static bool FormatEnd(const sockaddr_storage& ss, std::string* addr, uint32_t* port) {
  char text[INET6_ADDRSTRLEN];
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    if (inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text) == nullptr) return false;
    *port = ntohs(sin->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text) == nullptr) return false;
    *port = ntohs(sin6->sin6_port);
  } else {
    return false;
  }
  *addr = text;
  return true;
}

// ends(slot) → [localAddress, localPort, peerAddress, peerPort], or undefined (not connected).
Napi::Value HostTcp::Ends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Sock* s = Get(info, 0);
  if (s == nullptr || s->connecting) return env.Undefined();
  sockaddr_storage local{}, peer{};
  socklen_t llen = sizeof local, plen = sizeof peer;
  if (getsockname(s->fd, reinterpret_cast<sockaddr*>(&local), &llen) != 0) return env.Undefined();
  if (getpeername(s->fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) return env.Undefined();
  std::string la, pa;
  uint32_t lp = 0, pp = 0;
  if (!FormatEnd(local, &la, &lp) || !FormatEnd(peer, &pa, &pp)) return env.Undefined();
  Napi::Array out = Napi::Array::New(env, 4);
  out.Set(0u, Napi::String::New(env, la));
  out.Set(1u, Napi::Number::New(env, lp));
  out.Set(2u, Napi::String::New(env, pa));
  out.Set(3u, Napi::Number::New(env, pp));
  return out;
}

Napi::Value HostTcp::Count(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), open_);
}

// Watches what the socket's state asks for; the poll stops when nothing is wanted (a paused
// flow, or one whose host side ended and has nothing to write).
void HostTcp::Update(Sock* s) {
  if (s->closed) return;
  int events = 0;
  if (s->connecting) {
    events = UV_WRITABLE;
  } else {
    if (s->reading) events |= UV_READABLE;
    if (s->wantWrite) events |= UV_WRITABLE;
  }
  if (events == 0) {
    uv_poll_stop(&s->poll);
  } else {
    uv_poll_start(&s->poll, events, OnPoll);  // libuv only touches epoll when the set changes
  }
}

void HostTcp::CloseSock(Sock* s, bool reset) {
  if (s->closed) return;
  s->closed = true;
  if (reset) {
    linger lg{1, 0};
    setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  // uv_close drops the fd from epoll (and from events already fetched this loop turn) while the
  // fd is still open; only then is it closed. The Sock is freed in the close callback.
  uv_close(reinterpret_cast<uv_handle_t*>(&s->poll),
           [](uv_handle_t* h) { delete reinterpret_cast<Sock*>(h); });
  close(s->fd);
  slots_[s->slot] = nullptr;
  free_.push_back(s->slot);
  if (--open_ == 0 && !tornDown_) Unref();
}

void HostTcp::OnPoll(uv_poll_t* handle, int status, int events) {
  Sock* s = static_cast<Sock*>(handle->data);
  if (s == nullptr || s->closed) return;
  HostTcp* self = s->owner;
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  self->Ref();  // JS may close the last socket (and so drop our pin) during the call
  self->HandlePoll(s, status, events);
  self->Unref();
}

void HostTcp::HandlePoll(Sock* s, int status, int events) {
  if (status < 0) {
    // libuv stopped the handle on POLLERR. A flow that was reading takes what is still queued
    // first (read() then reports the error itself, as Node's streams do); otherwise SO_ERROR.
    if (!s->connecting && s->reading) {
      ReadSome(s);
      if (s->closed || !s->reading) return;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err == 0) err = EIO;
    bool connecting = s->connecting;
    s->connecting = false;
    s->reading = false;
    s->wantWrite = false;
    CallJs(connecting ? kConnectFailed : kError, s->slot, 0, ErrnoName(err));
    return;
  }
  if (s->connecting) {
    if (!(events & UV_WRITABLE)) return;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    s->connecting = false;
    if (err != 0) {
      Update(s);
      CallJs(kConnectFailed, s->slot, 0, ErrnoName(err));
      return;
    }
    s->reading = true;
    Update(s);
    CallJs(kConnected, s->slot, 0, nullptr);
    return;
  }
  if ((events & UV_WRITABLE) && s->wantWrite) {
    s->wantWrite = false;
    Update(s);
    if (!CallJs(kWritable, s->slot, 0, nullptr) || s->closed) return;
  }
  if ((events & UV_READABLE) && s->reading) ReadSome(s);
}

void HostTcp::ReadSome(Sock* s) {
  for (int i = 0; i < kMaxReads && !s->closed && s->reading; i++) {
    ssize_t n = read(s->fd, readBuf_, readLen_);
    if (n > 0) {
      if (!CallJs(kData, s->slot, static_cast<double>(n), nullptr)) return;
      if (static_cast<size_t>(n) < readLen_) return;  // drained for now
      continue;
    }
    if (n == 0) {
      s->reading = false;
      Update(s);
      CallJs(kEof, s->slot, 0, nullptr);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    int err = errno;
    s->reading = false;
    s->wantWrite = false;
    Update(s);
    CallJs(kError, s->slot, 0, ErrnoName(err));
    return;
  }
}

// One event to JS. False when JS threw (handed to 'uncaughtException').
bool HostTcp::CallJs(int32_t kind, uint32_t slot, double n, const char* code) {
  Napi::Env env = Env();
  napi_value args[4] = {
      Napi::Number::New(env, kind),
      Napi::Number::New(env, slot),
      Napi::Number::New(env, n),
      code != nullptr ? Napi::String::New(env, code) : env.Undefined(),
  };
  napi_value result;
  napi_status st = napi_make_callback(env, async_, Value(), onEvent_.Value(), 4, args, &result);
  if (st != napi_ok || env.IsExceptionPending()) {
    if (env.IsExceptionPending()) {
      Napi::Error e = env.GetAndClearPendingException();
      napi_fatal_exception(env, e.Value());
    }
    return false;
  }
  return true;
}

}  // namespace vmnat
