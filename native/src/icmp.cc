// PingSocket: one unprivileged ICMP echo socket (socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP))
// for one destination, watched by a uv_poll_t on the Node event loop.
//
// Theory of operation
//   The kernel allows these sockets to members of net.ipv4.ping_group_range (per network
//   namespace; the kernel's default "1 0" allows nobody, root included: socket() fails with
//   EACCES). We bind to port 0, which makes the kernel pick a free echo identifier (the socket's
//   "port"). We do not connect(): a destination without a route would fail the constructor, and a
//   route may appear later; each send() names the destination instead, and a missing route is
//   reported by that send (ENETUNREACH/EHOSTUNREACH). send() hands the kernel an echo request (type 8,
//   code 0): it overwrites the identifier with ours and computes the checksum; the sequence number
//   and data pass through untouched. Only echo replies carrying our identifier are delivered to
//   us, as whole ICMP messages (header + data), with the sender (msg_name) and the TTL they
//   arrived with (IP_RECVTTL).
//   IP_RECVERR: ICMP errors about our requests (destination unreachable, time exceeded, parameter
//   problem) are queued on the socket's error queue with the offender's address and the start of
//   our request as the kernel quoted it; we read them on POLLERR and report them with onError.
//   Errors that the kernel raised locally (EMSGSIZE on send, …) are counted, not reported.
//   A per-packet TTL goes with each send (an IP_TTL control message), so that a guest's
//   traceroute keeps counting hops beyond vmnat.
//
// The portable branch (macOS; the VMNAT_PORTABLE build on Linux): macOS also has unprivileged
//   SOCK_DGRAM/IPPROTO_ICMP sockets, but they are thin raw sockets: the kernel assigns no
//   identifier and rewrites none (so we pick one, write it into each request and compute the
//   checksum ourselves), every such socket receives every echo reply and ICMP error (so we keep
//   only replies carrying our identifier, and errors quoting one of our requests), and a received
//   message starts with its IP header (Apple's ping strips ip_hl*4 bytes first; so do we, taking
//   the TTL from that header). There is no IP_RECVERR: ICMP errors arrive in-band and are
//   reported through onError from there. No per-packet TTL control message either: IP_TTL is set
//   on the socket when a send asks for a different TTL than the last one. On Linux the portable
//   branch meets a ping socket (no IP header, kernel-assigned identifier, errors only as a socket
//   error that fails the next send): the same code handles both, because an ICMP type byte is
//   never 0x45..0x4f, the first byte of an IPv4 header.
//
// IPv6 (Linux branch): a destination with a ':' opens socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6),
//   the same kind of ping socket under the same ping_group_range: the kernel rewrites the
//   identifier of echo requests (type 128), delivers echo replies (129) with the hop limit
//   (IPV6_RECVHOPLIMIT), and queues ICMPv6 errors (IPV6_RECVERR). Addresses of replies and
//   offenders reach JS as text for IPv6 (a number for IPv4). The portable branch is IPv4 only.
//
// Errors and exceptions
//   The constructor throws an errno Error (code EACCES when ping sockets are not permitted).
//   send() never throws for I/O: it returns the errno name (EAGAIN, ENETUNREACH, …) or undefined.
//   A JS exception thrown by a callback goes to Node's 'uncaughtException' path (as FramePort).
//
// Lifetime: the object pins itself (ObjectWrap::Ref) from construction until close(); the poll
// handle is freed in its close callback; an env cleanup hook closes the fd at exit.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <napi.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <initializer_list>

#include "common.h"

#if VMNAT_LINUX
#include <linux/errqueue.h>
#else
#include <stdlib.h>
#endif

namespace vmnat {

namespace {

constexpr size_t kMaxMessage = 65536;
constexpr int kMaxReadsPerEvent = 64;  // then back to the loop (level-triggered: it calls again)

// One receive buffer for every socket: all run on the main thread and a message is copied into
// its own Buffer before the callback sees it.
uint8_t g_rx[kMaxMessage];

#if !VMNAT_LINUX
// The request we hand the kernel, with our identifier and checksum written in (portable branch).
uint8_t g_tx[kMaxMessage];

// RFC 1071 over [p, p+n): the value to store, in network byte order, at the checksum field.
uint16_t InternetChecksum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (; n >= 2; p += 2, n -= 2) sum += static_cast<uint32_t>(p[0] << 8 | p[1]);
  if (n == 1) sum += static_cast<uint32_t>(p[0] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}
#endif

}  // namespace

class PingSocket : public Napi::ObjectWrap<PingSocket> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit PingSocket(const Napi::CallbackInfo& info);
  ~PingSocket() override { Teardown(); }

 private:
  Napi::Value Send(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value GetIdent(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void EnvCleanup(void* arg);
  void ReadMessages();
  void ReadErrors();
  void Deliver(const uint8_t* data, size_t n, uint32_t src, int ttl);
  napi_value AddrValue(const sockaddr* sa);
  void CallJs(Napi::FunctionReference& fn, std::initializer_list<napi_value> args);
  void Teardown();

  Napi::AsyncContext async_;
  Napi::FunctionReference onMessage_;
  Napi::FunctionReference onError_;
  int fd_ = -1;
  sockaddr_storage peer_{};
  socklen_t peerLen_ = 0;
  bool v6_ = false;
  uint16_t ident_ = 0;
#if !VMNAT_LINUX
  int lastTtl_ = -1;  // the IP_TTL the socket carries now
#endif
  bool closed_ = false;
  bool pinned_ = false;
  bool cleanupHook_ = false;
  uv_poll_t* poll_ = nullptr;
  uint64_t rxMessages_ = 0, rxErrors_ = 0, localErrors_ = 0, txMessages_ = 0, txErrors_ = 0;
};

Napi::Function PingSocket::Init(Napi::Env env) {
  return DefineClass(env, "PingSocket",
                     {
                         InstanceAccessor<&PingSocket::GetIdent>("ident"),
                         InstanceMethod<&PingSocket::Send>("send"),
                         InstanceMethod<&PingSocket::Stats>("stats"),
                         InstanceMethod<&PingSocket::Close>("close"),
                     });
}

PingSocket::PingSocket(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<PingSocket>(info), async_(info.Env(), "vmnat.PingSocket") {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) {
    ThrowType(env, "PingSocket(destination: string, options)");
    return;
  }
  std::string dst = info[0].As<Napi::String>().Utf8Value();
  sockaddr_storage peer{};
  socklen_t peerLen = 0;
  const bool v6 = dst.find(':') != std::string::npos;
  if (v6) {
#if VMNAT_LINUX
    sockaddr_in6* p6 = reinterpret_cast<sockaddr_in6*>(&peer);
    p6->sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, dst.c_str(), &p6->sin6_addr) != 1) {
      ThrowType(env, "PingSocket: destination must be an IPv4 or IPv6 address");
      return;
    }
    peerLen = sizeof(sockaddr_in6);
#else
    ThrowType(env, "PingSocket: IPv6 pings need the Linux build");
    return;
#endif
  } else {
    sockaddr_in* p4 = reinterpret_cast<sockaddr_in*>(&peer);
    p4->sin_family = AF_INET;
    if (inet_pton(AF_INET, dst.c_str(), &p4->sin_addr) != 1) {
      ThrowType(env, "PingSocket: destination must be an IPv4 or IPv6 address");
      return;
    }
    peerLen = sizeof(sockaddr_in);
  }
  Napi::Object opts = info[1].As<Napi::Object>();
  Napi::Value onMessage = opts.Get("onMessage");
  Napi::Value onError = opts.Get("onError");
  if (!onMessage.IsFunction() || !onError.IsFunction()) {
    ThrowType(env, "PingSocket: options.onMessage and options.onError must be functions");
    return;
  }

  const int proto = v6 ? static_cast<int>(IPPROTO_ICMPV6) : static_cast<int>(IPPROTO_ICMP);
  int fd = OpenSocket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, proto, true);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket");
    return;
  }
  const int on = 1;
  sockaddr_storage any{};
  socklen_t anyLen = 0;
  if (v6) {
#if VMNAT_LINUX
    setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &on, sizeof on);
    setsockopt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &on, sizeof on);
    sockaddr_in6* a6 = reinterpret_cast<sockaddr_in6*>(&any);
    a6->sin6_family = AF_INET6;
    a6->sin6_addr = in6addr_any;
    anyLen = sizeof(sockaddr_in6);
#endif
  } else {
#if VMNAT_LINUX
    setsockopt(fd, IPPROTO_IP, IP_RECVERR, &on, sizeof on);
#endif
    setsockopt(fd, IPPROTO_IP, IP_RECVTTL, &on, sizeof on);
    sockaddr_in* a4 = reinterpret_cast<sockaddr_in*>(&any);
    a4->sin_family = AF_INET;
    a4->sin_addr.s_addr = htonl(INADDR_ANY);
    anyLen = sizeof(sockaddr_in);
  }
  // Port 0: the kernel picks a free identifier.
  sockaddr_storage bound{};
  socklen_t boundLen = sizeof bound;
  if (bind(fd, reinterpret_cast<sockaddr*>(&any), anyLen) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "bind");
    return;
  }
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &boundLen) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "getsockname");
    return;
  }
  ident_ = v6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
             : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
#if !VMNAT_LINUX
  // macOS assigns none (the "port" stays 0): pick one. Other processes' pings may share it by
  // chance; replies are matched on identifier only, so a collision can deliver a stray reply,
  // which the NAT then ignores (its sequence numbers do not match an outstanding request).
  if (ident_ == 0) ident_ = static_cast<uint16_t>(1 + arc4random_uniform(0xfffe));
#endif

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    close(fd);
    ThrowType(env, "PingSocket: no event loop");
    return;
  }
  poll_ = new uv_poll_t;
  int r = uv_poll_init(loop, poll_, fd);
  if (r != 0) {
    delete poll_;
    poll_ = nullptr;
    close(fd);
    ThrowErrno(env, -r, "uv_poll_init");
    return;
  }
  poll_->data = this;
  fd_ = fd;
  peer_ = peer;
  peerLen_ = peerLen;
  v6_ = v6;
  onMessage_ = Napi::Persistent(onMessage.As<Napi::Function>());
  onError_ = Napi::Persistent(onError.As<Napi::Function>());
  napi_add_env_cleanup_hook(env, EnvCleanup, this);
  cleanupHook_ = true;
  uv_poll_start(poll_, UV_READABLE, OnPoll);
  Ref();  // the loop may call us until close()
  pinned_ = true;
}

void PingSocket::EnvCleanup(void* arg) {
  PingSocket* self = static_cast<PingSocket*>(arg);
  self->cleanupHook_ = false;
  self->Teardown();
}

void PingSocket::Teardown() {
  if (cleanupHook_) {
    napi_remove_env_cleanup_hook(Env(), EnvCleanup, this);
    cleanupHook_ = false;
  }
  closed_ = true;
  if (poll_ != nullptr) {
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

Napi::Value PingSocket::GetIdent(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ident_);
}

Napi::Value PingSocket::Close(const Napi::CallbackInfo& info) {
  if (closed_) return info.Env().Undefined();
  Teardown();
  onMessage_.Reset();
  onError_.Reset();
  if (pinned_) {
    pinned_ = false;
    Unref();
  }
  return info.Env().Undefined();
}

// send(message: Uint8Array, ttl: number): undefined when the kernel took it, else the errno name.
Napi::Value PingSocket::Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsNumber()) {
    ThrowType(env, "send(message: Uint8Array, ttl: number)");
    return env.Undefined();
  }
  if (closed_) return Napi::String::New(env, "EBADF");
  napi_typedarray_type type;
  size_t length;
  void* data;
  napi_value arraybuffer;
  size_t byteOffset;
  if (napi_get_typedarray_info(env, info[0], &type, &length, &data, &arraybuffer, &byteOffset) !=
          napi_ok ||
      type != napi_uint8_array) {
    ThrowType(env, "send(message: Uint8Array, ttl: number)");
    return env.Undefined();
  }
  int ttl = info[1].As<Napi::Number>().Int32Value();
  if (ttl < 1 || ttl > 255) {
    ThrowType(env, "send: ttl must be within 1..255");
    return env.Undefined();
  }
#if VMNAT_LINUX
  iovec iov{data, length};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof control);
  msghdr msg{};
  msg.msg_name = &peer_;
  msg.msg_namelen = peerLen_;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = v6_ ? IPPROTO_IPV6 : IPPROTO_IP;
  c->cmsg_type = v6_ ? IPV6_HOPLIMIT : IP_TTL;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &ttl, sizeof ttl);
#else
  if (length < 8 || length > sizeof g_tx) {
    ++txErrors_;
    return Napi::String::New(env, ErrnoName(length < 8 ? EINVAL : EMSGSIZE));
  }
  if (ttl != lastTtl_) {
    if (setsockopt(fd_, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) != 0) {
      ++txErrors_;
      return Napi::String::New(env, ErrnoName(errno));
    }
    lastTtl_ = ttl;
  }
  memcpy(g_tx, data, length);
  g_tx[4] = static_cast<uint8_t>(ident_ >> 8);
  g_tx[5] = static_cast<uint8_t>(ident_);
  g_tx[2] = g_tx[3] = 0;
  const uint16_t ck = InternetChecksum(g_tx, length);
  g_tx[2] = static_cast<uint8_t>(ck >> 8);
  g_tx[3] = static_cast<uint8_t>(ck);
  iovec iov{g_tx, length};
  msghdr msg{};
  msg.msg_name = &peer_;
  msg.msg_namelen = peerLen_;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
#endif
  // A pending asynchronous error (an ICMP error we have not read yet) fails the next send once
  // and is cleared by it: retry once so that the error does not cost the guest a request too.
  for (int attempt = 0;; ++attempt) {
    ssize_t r = sendmsg(fd_, &msg, MSG_DONTWAIT | kSendNoSignal);
    if (r >= 0) {
      ++txMessages_;
      return env.Undefined();
    }
    int err = errno;
    if (err == EINTR) continue;
    if (attempt == 0 && (err == EHOSTUNREACH || err == ENETUNREACH || err == ECONNREFUSED ||
                         err == EPROTO || err == EHOSTDOWN)) {
      continue;
    }
    ++txErrors_;
    return Napi::String::New(env, ErrnoName(err));
  }
}

Napi::Value PingSocket::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("rxMessages", Napi::Number::New(env, static_cast<double>(rxMessages_)));
  o.Set("rxErrors", Napi::Number::New(env, static_cast<double>(rxErrors_)));
  o.Set("localErrors", Napi::Number::New(env, static_cast<double>(localErrors_)));
  o.Set("txMessages", Napi::Number::New(env, static_cast<double>(txMessages_)));
  o.Set("txErrors", Napi::Number::New(env, static_cast<double>(txErrors_)));
  return o;
}

void PingSocket::OnPoll(uv_poll_t* handle, int status, int events) {
  PingSocket* self = static_cast<PingSocket*>(handle->data);
  if (self == nullptr || self->closed_) return;
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  self->Ref();  // a callback may close() us and drop the last reference
  // libuv reports POLLERR (a non-empty error queue, or sk_err) as status < 0 and stops the
  // handle: drain the queue and re-arm. Replies waiting behind it are read either way.
  if (status < 0) {
#if VMNAT_LINUX
    self->ReadErrors();
#else
    // No error queue: the condition is a pending socket error (sk_err); clear it.
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(self->fd_, SOL_SOCKET, SO_ERROR, &err, &len);
#endif
    if (!self->closed_ && self->poll_ != nullptr) uv_poll_start(self->poll_, UV_READABLE, OnPoll);
  }
  if (!self->closed_) self->ReadMessages();
  self->Unref();
}

void PingSocket::CallJs(Napi::FunctionReference& fn, std::initializer_list<napi_value> args) {
  if (fn.IsEmpty()) return;
  Napi::Env env = Env();
  napi_value result;
  napi_status st =
      napi_make_callback(env, async_, Value(), fn.Value(), args.size(), args.begin(), &result);
  if ((st != napi_ok || env.IsExceptionPending()) && env.IsExceptionPending()) {
    Napi::Error e = env.GetAndClearPendingException();
    napi_fatal_exception(env, e.Value());
  }
}

// An address for JS: IPv4 as a number (host order), IPv6 as text; -1 for anything else.
napi_value PingSocket::AddrValue(const sockaddr* sa) {
  Napi::Env env = Env();
  if (sa->sa_family == AF_INET) {
    return Napi::Number::New(env, static_cast<double>(ntohl(reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr)));
  }
  if (sa->sa_family == AF_INET6) {
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, text, sizeof text) != nullptr) {
      return Napi::String::New(env, text);
    }
  }
  return Napi::Number::New(env, -1);
}

void PingSocket::ReadMessages() {
#if VMNAT_LINUX
  Napi::Env env = Env();
#endif
  for (int i = 0; i < kMaxReadsPerEvent && !closed_; ++i) {
    sockaddr_storage fromStorage{};
    iovec iov{g_rx, sizeof g_rx};
    alignas(cmsghdr) char control[256];
    msghdr msg{};
    msg.msg_name = &fromStorage;
    msg.msg_namelen = sizeof fromStorage;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(fd_, &msg, MSG_DONTWAIT);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      // A pending asynchronous error (sk_err) reported by this receive and cleared: the error
      // itself is in the error queue, which ReadErrors handles.
      continue;
    }
    if (msg.msg_flags & MSG_TRUNC) continue;
    int ttl = -1;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
#if VMNAT_LINUX
      if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
        memcpy(&ttl, CMSG_DATA(c), sizeof ttl);
      }
#endif
      if (c->cmsg_level != IPPROTO_IP) continue;
      // Linux: IP_TTL with an int. BSD/macOS: IP_RECVTTL with one byte.
      if (c->cmsg_type == IP_TTL && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
        memcpy(&ttl, CMSG_DATA(c), sizeof ttl);
      }
#if !VMNAT_LINUX && defined(__APPLE__)
      if (c->cmsg_type == IP_RECVTTL && c->cmsg_len >= CMSG_LEN(1)) ttl = *CMSG_DATA(c);
#endif
    }
#if VMNAT_LINUX
    ++rxMessages_;
    Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::Copy(env, g_rx, static_cast<size_t>(n));
    CallJs(onMessage_, {buf, AddrValue(reinterpret_cast<const sockaddr*>(&fromStorage)), Napi::Number::New(env, ttl)});
#else
    Deliver(g_rx, static_cast<size_t>(n), ntohl(reinterpret_cast<sockaddr_in*>(&fromStorage)->sin_addr.s_addr), ttl);
#endif
  }
}

#if VMNAT_LINUX
void PingSocket::Deliver(const uint8_t*, size_t, uint32_t, int) {}
#else
// What one received datagram is, portable branch: strip an IP header if the kernel left one
// (macOS), and keep only what is ours (see the theory of operation). A pure function of the bytes,
// exported by the portable build as icmpClassify so that the macOS receive format is tested on
// Linux with crafted datagrams.
struct IcmpClass {
  enum Kind { kIgnore, kReply, kError } kind = kIgnore;
  size_t off = 0, len = 0;  // reply: the ICMP message; error: our quoted request
  uint32_t src = 0;
  int ttl = -1;
  uint8_t type = 0, code = 0;
  uint32_t info = 0;  // as Linux's ee_info: next-hop MTU of "fragmentation needed", parameter-problem pointer
};

static IcmpClass ClassifyIcmp(const uint8_t* p0, size_t n, uint16_t ident, uint32_t src, int ttl) {
  IcmpClass c;
  const uint8_t* p = p0;
  if (n >= 20 && (p[0] >> 4) == 4) {
    const size_t ihl = (p[0] & 0x0f) * 4u;
    if (ihl < 20 || ihl > n || p[9] != IPPROTO_ICMP) return c;
    ttl = p[8];
    src = static_cast<uint32_t>(p[12]) << 24 | p[13] << 16 | p[14] << 8 | p[15];
    p += ihl;
    n -= ihl;
  }
  if (n < 8) return c;
  c.src = src;
  c.ttl = ttl;
  c.type = p[0];
  c.code = p[1];
  if (c.type == 0) {  // echo reply
    if ((p[4] << 8 | p[5]) != ident) return c;
    c.kind = IcmpClass::kReply;
    c.off = static_cast<size_t>(p - p0);
    c.len = n;
    return c;
  }
  if (c.type != 3 && c.type != 11 && c.type != 12) return c;  // unreachable, time exceeded, parameter problem
  // The error quotes the offending datagram: its IP header, then (at least) 8 bytes of our request.
  const uint8_t* q = p + 8;
  const size_t qn = n - 8;
  if (qn < 20 || (q[0] >> 4) != 4) return c;
  const size_t qihl = (q[0] & 0x0f) * 4u;
  if (qihl < 20 || qn < qihl + 8 || q[9] != IPPROTO_ICMP) return c;
  const uint8_t* req = q + qihl;
  if (req[0] != 8 || (req[4] << 8 | req[5]) != ident) return c;
  if (c.type == 3 && c.code == 4) c.info = static_cast<uint32_t>(p[6] << 8 | p[7]);
  if (c.type == 12) c.info = p[4];
  c.kind = IcmpClass::kError;
  c.off = static_cast<size_t>(req - p0);
  c.len = qn - qihl;
  return c;
}

void PingSocket::Deliver(const uint8_t* p, size_t n, uint32_t src, int ttl) {
  Napi::Env env = Env();
  const IcmpClass c = ClassifyIcmp(p, n, ident_, src, ttl);
  if (c.kind == IcmpClass::kReply) {
    ++rxMessages_;
    Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::Copy(env, p + c.off, c.len);
    CallJs(onMessage_, {buf, Napi::Number::New(env, c.src), Napi::Number::New(env, c.ttl)});
  } else if (c.kind == IcmpClass::kError) {
    ++rxErrors_;
    Napi::Buffer<uint8_t> quoted = Napi::Buffer<uint8_t>::Copy(env, p + c.off, c.len);
    CallJs(onError_, {Napi::Number::New(env, c.type), Napi::Number::New(env, c.code),
                      Napi::Number::New(env, c.info), Napi::Number::New(env, c.src), quoted});
  }
}

// icmpClassify(datagram, ident, src, ttl) → { kind: 'reply'|'error'|'ignore', offset, length,
// src, ttl, type, code, info }: ClassifyIcmp for tests (portable build only).
static Napi::Value IcmpClassify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsBuffer() || !info[1].IsNumber() || !info[2].IsNumber() ||
      !info[3].IsNumber()) {
    ThrowType(env, "icmpClassify(datagram: Buffer, ident: number, src: number, ttl: number)");
    return env.Undefined();
  }
  Napi::Buffer<uint8_t> b = info[0].As<Napi::Buffer<uint8_t>>();
  const uint16_t ident = static_cast<uint16_t>(info[1].As<Napi::Number>().Uint32Value());
  const IcmpClass c = ClassifyIcmp(b.Data(), b.Length(), ident, info[2].As<Napi::Number>().Uint32Value(),
                                   info[3].As<Napi::Number>().Int32Value());
  Napi::Object o = Napi::Object::New(env);
  o.Set("kind", c.kind == IcmpClass::kReply ? "reply" : c.kind == IcmpClass::kError ? "error" : "ignore");
  o.Set("offset", Napi::Number::New(env, static_cast<double>(c.off)));
  o.Set("length", Napi::Number::New(env, static_cast<double>(c.len)));
  o.Set("src", Napi::Number::New(env, c.src));
  o.Set("ttl", Napi::Number::New(env, c.ttl));
  o.Set("type", Napi::Number::New(env, c.type));
  o.Set("code", Napi::Number::New(env, c.code));
  o.Set("info", Napi::Number::New(env, c.info));
  return o;
}
#endif

#if VMNAT_LINUX
void PingSocket::ReadErrors() {
  Napi::Env env = Env();
  for (int i = 0; i < kMaxReadsPerEvent && !closed_; ++i) {
    iovec iov{g_rx, sizeof g_rx};
    alignas(cmsghdr) char control[512];
    sockaddr_storage from{};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(fd_, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // EAGAIN: the queue is empty
    }
    const sock_extended_err* ee = nullptr;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) ||
          (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR)) {
        ee = reinterpret_cast<const sock_extended_err*>(CMSG_DATA(c));
      }
    }
    if (ee == nullptr || (ee->ee_origin != SO_EE_ORIGIN_ICMP && ee->ee_origin != SO_EE_ORIGIN_ICMP6)) {
      ++localErrors_;
      continue;
    }
    ++rxErrors_;
    const sockaddr* off = SO_EE_OFFENDER(ee);
    Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::Copy(env, g_rx, static_cast<size_t>(n));
    CallJs(onError_, {Napi::Number::New(env, ee->ee_type), Napi::Number::New(env, ee->ee_code),
                      Napi::Number::New(env, ee->ee_info), AddrValue(off), buf});
  }
  // The same error also set sk_err: clear it so the next send is not failed by it.
  int err = 0;
  socklen_t len = sizeof err;
  if (!closed_) getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
}

#else
void PingSocket::ReadErrors() {}  // no error queue: ICMP errors arrive in-band (Deliver)
#endif

void InitIcmp(Napi::Env env, Napi::Object exports) {
  exports.Set("PingSocket", PingSocket::Init(env));
#if !VMNAT_LINUX
  exports.Set("icmpClassify", Napi::Function::New(env, IcmpClassify, "icmpClassify"));
#endif
}

}  // namespace vmnat
