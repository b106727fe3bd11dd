// FramePort: batched frame I/O on one fd, driven by a uv_poll_t on the Node event loop.
//
// Theory of operation
//   Receive: when the fd is readable we pull up to `vlen` frames with one recvmmsg (sockets; the
//   portable build and macOS loop recvmsg instead, same contract) or a read() loop (a TAP), into
//   a page-aligned slab of fixed slots, and make ONE JS call per batch: onFrames(slab, offsets,
//   count). The slab and the Int32Array of offsets are created once and reused, so a batch
//   allocates nothing; frames are valid during the call only.
//   Slots are a multiple of 4096 bytes apart: large receives into page-aligned memory were ~3×
//   faster than into Node's own buffers (shared/notes/node-io.md). `vlen` adapts so one batch is
//   about 256 KiB (≈170 frames of 1514 B, 4 of 64 KiB): more frames per syscall and per JS call
//   when they are small, cache-sized batches when they are big. At most kMaxRounds batches per
//   poll event, then back to the loop (level-triggered, so it calls us again) to keep timers and
//   host sockets fair.
//   Send: send() copies a frame into a byte arena; flush() hands everything queued to the kernel
//   with sendmmsg (portable: a sendmsg loop; a write() loop on a TAP). When the kernel says
//   EAGAIN the rest stays queued (bounded: kTxArenaBytes / kTxMaxFrames), POLLOUT is armed, and
//   the queue drains when the fd is writable; frames beyond the bound are dropped and counted
//   (txDropped).
//   learnPeer (a bound, unconnected socket: the guest's address is not known in advance): we
//   receive with msg_name; the first datagram from a new sender makes us connect() back to it and
//   call onPeer(path). Connecting matters twice: replies need an address, and the kernel's small
//   per-socket datagram queue limit (net.unix.max_dgram_qlen) does not apply to a sender whose
//   receiver is connected to it. A send that fails with ECONNREFUSED/ENOTCONN means the peer is
//   gone (the kernel has already dropped our connection); the next datagram is learned afresh.
//   resetPeer() disconnects explicitly (the caller noticed the peer's socket file was replaced).
//
// Errors and exceptions
//   onError(code) is called at most once, for a fatal condition (bad fd, detached TAP, a connected
//   socket's peer gone): polling stops; the fd stays open until close(). Transient socket errors
//   (ECONNRESET/ECONNREFUSED reported on receive) are cleared and polling continues.
//   JS callbacks run through napi_make_callback (so process.nextTick and promise jobs run after
//   each batch, as after any Node I/O callback). An exception thrown by a callback never unwinds
//   through libuv: we take it and hand it to napi_fatal_exception, which is exactly Node's
//   'uncaughtException' path — with no listener the process reports it and exits; with one, the
//   listener sees it and the port keeps running.
//
// Lifetime: start() pins the JS object (ObjectWrap::Ref) until close(); each poll callback pins it
// again for its duration, because a callback may close() the port and drop the last reference.
// The uv_poll_t is a separate allocation freed in its close callback. The slab is an external
// Buffer that unmaps itself when JS lets go of it.
//
// Stream (kind 'stream': qemu's `-netdev stream` framing, a 4-byte big-endian length before each
// frame, on a connected unix stream socket): the slab is one contiguous receive buffer instead
// of slots. Each read appends to it; every whole frame in it is handed over in the same one JS
// call per batch (offsets point into the buffer), and the partial frame at its end is moved to
// the front for the next read. A length of 0 or above maxFrame means the peer does not speak the
// framing, which cannot be resynchronized: counted in rxErrors, and the port fails with EPROTO.
// Sending queues the length prefix with each frame in the same arena and hands the queue to the
// kernel with one sendmsg of many iovecs; a partial write leaves the rest of the head frame
// queued (a stream cannot lose part of a frame), and only whole frames are ever dropped.
//
// macOS (the portable branch): a unix datagram socket sends nothing larger than its SO_SNDBUF
// (EMSGSIZE: that frame is dropped and counted), and a send to a peer whose receive buffer is
// full fails with ENOBUFS instead of EAGAIN — there is no send queue to wait on and POLLOUT would
// fire at once, so that frame is dropped too (as a full NIC ring drops; TCP recovers). Both are
// why the buffers are made large (common.h) and why the CLI warns when they are not.
#include "frame_port.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

#include "common.h"
#include "sockets.h"

namespace vmnat {

namespace {

constexpr uint32_t kPage = 4096;
constexpr uint32_t kMaxSlots = 256;            // frames per receive batch, upper bound
constexpr uint32_t kMinSlots = 4;              // frames per receive batch, lower bound
constexpr uint32_t kBatchBytes = 256 * 1024;   // target bytes per receive batch
constexpr uint32_t kMaxRounds = 16;            // receive batches per poll event
constexpr uint32_t kDefaultMaxFrame = 65536 + 64;
constexpr uint32_t kTxArenaBytes = 4 << 20;    // send queue bound (bytes)
constexpr uint32_t kTxMaxFrames = 1024;        // send queue bound (frames); = UIO_MAXIOV
constexpr uint32_t kTxSoftBytes = 512 * 1024;  // send() flushes by itself beyond this
constexpr uint32_t kTxSoftFrames = 256;
constexpr uint32_t kStreamRead = 256 * 1024;     // bytes per read() on a stream

struct SlabHint {
  size_t bytes;
};

void UnmapSlab(Napi::Env, uint8_t* data, SlabHint* hint) {
  munmap(data, hint->bytes);
  delete hint;
}

bool SameAddr(const sockaddr_un& a, socklen_t alen, const sockaddr_un& b, socklen_t blen) {
  return alen == blen && memcmp(&a, &b, alen) == 0;
}

}  // namespace

Napi::Function FramePort::Init(Napi::Env env) {
  return DefineClass(env, "FramePort",
                     {
                         InstanceMethod<&FramePort::Start>("start"),
                         InstanceMethod<&FramePort::Send>("send"),
                         InstanceMethod<&FramePort::SendGso>("sendGso"),
                         InstanceMethod<&FramePort::Flush>("flush"),
                         InstanceMethod<&FramePort::Stats>("stats"),
                         InstanceMethod<&FramePort::ResetPeer>("resetPeer"),
                         InstanceMethod<&FramePort::Close>("close"),
                     });
}

FramePort::FramePort(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<FramePort>(info), async_(info.Env(), "vmnat.FramePort") {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsObject()) {
    ThrowType(env, "FramePort(fd, options)");
    return;
  }
  // The port owns the fd only once constructed: a constructor that throws leaves it to the caller.
  const int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Object opts = info[1].As<Napi::Object>();

  Napi::Value kind = opts.Get("kind");
  std::string k = kind.IsString() ? kind.As<Napi::String>().Utf8Value() : "";
  if (k == "dgram") {
    tap_ = false;
  } else if (k == "tap") {
    tap_ = true;
  } else if (k == "stream") {
    stream_ = true;
  } else {
    ThrowType(env, "FramePort: options.kind must be 'dgram', 'tap' or 'stream'");
    return;
  }
  learnPeer_ = !tap_ && !stream_ && opts.Get("learnPeer").ToBoolean().Value();
  vnetHdr_ = tap_ && opts.Get("vnetHdr").ToBoolean().Value();
  txHdr_ = vnetHdr_ ? kVnetHdrLen : stream_ ? 4 : 0;

  Napi::Value onFrames = opts.Get("onFrames");
  if (!onFrames.IsFunction()) {
    ThrowType(env, "FramePort: options.onFrames must be a function");
    return;
  }
  onFrames_ = Napi::Persistent(onFrames.As<Napi::Function>());
  Napi::Value onPeer = opts.Get("onPeer");
  if (onPeer.IsFunction()) onPeer_ = Napi::Persistent(onPeer.As<Napi::Function>());
  Napi::Value onError = opts.Get("onError");
  if (onError.IsFunction()) onError_ = Napi::Persistent(onError.As<Napi::Function>());

  maxFrame_ = kDefaultMaxFrame;
  Napi::Value mf = opts.Get("maxFrame");
  if (mf.IsNumber()) {
    int64_t v = mf.As<Napi::Number>().Int64Value();
    if (v < 64 || v > (1 << 20)) {
      ThrowType(env, "FramePort: options.maxFrame must be within 64..1048576");
      return;
    }
    maxFrame_ = static_cast<uint32_t>(v);
  }

  // Receive slab: kMaxSlots page-aligned slots. Anonymous memory is reserved, not committed:
  // only pages the kernel actually writes into become resident.
  stride_ = (maxFrame_ + kPage - 1) / kPage * kPage;
  size_t slabBytes = static_cast<size_t>(stride_) * kMaxSlots;
  void* mem = mmap(nullptr, slabBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | VMNAT_MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap");
    return;
  }
  slab_ = static_cast<uint8_t*>(mem);
  Napi::Buffer<uint8_t> slab =
      Napi::Buffer<uint8_t>::New(env, slab_, slabBytes, UnmapSlab, new SlabHint{slabBytes});
  slabRef_ = Napi::Persistent(slab);
  Napi::Int32Array offsets = Napi::Int32Array::New(env, 2 * kMaxSlots);
  offsets_ = offsets.Data();
  offsetsRef_ = Napi::Persistent(offsets);

  msgs_.resize(kMaxSlots);
  iovs_.resize(kMaxSlots);
  if (learnPeer_) names_.resize(kMaxSlots);
  txEntries_.reserve(kTxMaxFrames);
  void* arena = mmap(nullptr, kTxArenaBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | VMNAT_MAP_NORESERVE, -1, 0);
  if (arena == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap");
    return;
  }
  txArena_ = static_cast<uint8_t*>(arena);
  txMsgs_.resize(kTxMaxFrames);
  txIovs_.resize(kTxMaxFrames);

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    ThrowType(env, "FramePort: no event loop");
    return;
  }
  poll_ = new uv_poll_t;
  int r = uv_poll_init(loop, poll_, fd);
  if (r != 0) {
    delete poll_;
    poll_ = nullptr;
    ThrowErrno(env, -r, "uv_poll_init");
    return;
  }
  poll_->data = this;
  fd_ = fd;
  // An inherited socket (--fd, spawn mode) gets the same large buffers as the ones we create:
  // on macOS its SO_SNDBUF is the largest frame it can send.
  if (!tap_) EnlargeSocketBuffers(fd_);
#if !VMNAT_LINUX && defined(SO_NOSIGPIPE)
  if (!tap_) {
    // No MSG_NOSIGNAL here: an inherited socket must not raise SIGPIPE when its peer is gone.
    const int on = 1;
    setsockopt(fd_, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof on);
  }
#endif
  napi_add_env_cleanup_hook(env, EnvCleanup, this);
  cleanupHook_ = true;
}

FramePort::~FramePort() {
  Teardown();
  if (txArena_ != nullptr) munmap(txArena_, kTxArenaBytes);
}

void FramePort::EnvCleanup(void* arg) {
  FramePort* self = static_cast<FramePort*>(arg);
  self->cleanupHook_ = false;  // Node is running (and discarding) it right now
  self->Teardown();
}

// Releases the fd and the poll handle without calling into JS. Safe to call more than once.
void FramePort::Teardown() {
  if (cleanupHook_) {
    napi_remove_env_cleanup_hook(Env(), EnvCleanup, this);
    cleanupHook_ = false;
  }
  closed_ = true;
  if (poll_ != nullptr) {
    uv_poll_stop(poll_);  // removes the fd from epoll before we close it
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

Napi::Value FramePort::Start(const Napi::CallbackInfo& info) {
  if (closed_ || reading_) return info.Env().Undefined();
  reading_ = true;
  Ref();  // keep the object alive while the loop may call it; balanced in Close()
  pinned_ = true;
  UpdatePoll();
  return info.Env().Undefined();
}

Napi::Value FramePort::Close(const Napi::CallbackInfo& info) {
  if (closed_) return info.Env().Undefined();
  Teardown();
  onFrames_.Reset();
  onPeer_.Reset();
  onError_.Reset();
  txEntries_.clear();
  txHead_ = 0;
  txUsed_ = 0;
  txHeadSent_ = 0;
  if (pinned_) {
    pinned_ = false;
    Unref();
  }
  return info.Env().Undefined();
}

Napi::Value FramePort::ResetPeer(const Napi::CallbackInfo& info) {
  if (closed_ || !learnPeer_) return info.Env().Undefined();
  sockaddr unspec;
  memset(&unspec, 0, sizeof unspec);
  unspec.sa_family = AF_UNSPEC;
  connect(fd_, &unspec, sizeof unspec);  // AF_UNSPEC dissolves a datagram association
  ForgetPeer();
  return info.Env().Undefined();
}

void FramePort::ForgetPeer() {
  peerConnected_ = false;
  peerKnown_ = false;
  peerLen_ = 0;
  DropQueued();
}

void FramePort::DropQueued() {
  txDropped_ += txEntries_.size() - txHead_;
  txEntries_.clear();
  txHead_ = 0;
  txUsed_ = 0;
  txHeadSent_ = 0;
  if (wantWrite_) {
    wantWrite_ = false;
    UpdatePoll();
  }
}

void FramePort::UpdatePoll() {
  if (closed_ || poll_ == nullptr || failed_) return;
  int events = (reading_ ? UV_READABLE : 0) | (wantWrite_ ? UV_WRITABLE : 0);
  if (events == 0) {
    uv_poll_stop(poll_);
  } else {
    uv_poll_start(poll_, events, OnPoll);
  }
}

void FramePort::OnPoll(uv_poll_t* handle, int status, int events) {
  FramePort* self = static_cast<FramePort*>(handle->data);
  if (self == nullptr || self->closed_) return;
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  self->Ref();  // a JS callback below may close() us and drop the last reference
  self->HandlePoll(status, events);
  self->Unref();
}

void FramePort::HandlePoll(int status, int events) {
  if (status < 0) {
    // libuv stops the handle on POLLERR. Find out what the error was (SO_ERROR clears it).
    int err = 0;
    if (tap_) {
      uint8_t probe[1];
      ssize_t n = read(fd_, probe, 0);
      err = n < 0 ? errno : EIO;
    } else {
      socklen_t len = sizeof err;
      if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
    if (!tap_ && !stream_ && (err == 0 || err == ECONNRESET || err == ECONNREFUSED)) {
      if (learnPeer_ && err != 0) ForgetPeer();
      UpdatePoll();  // re-arm: the condition was transient
      return;
    }
    Fail(ErrnoName(err));
    return;
  }
  if ((events & UV_WRITABLE) && !closed_) FlushQueue();
  if ((events & UV_READABLE) && !closed_ && !failed_) {
    if (tap_) {
      ReadTap();
    } else if (stream_) {
      ReadStream();
    } else {
      ReadDgram();
    }
  }
}

void FramePort::Fail(const char* code) {
  if (failed_ || closed_) return;
  failed_ = true;
  if (poll_ != nullptr) uv_poll_stop(poll_);
  DropQueued();
  if (!onError_.IsEmpty()) {
    Napi::Env env = Env();
    CallJs(onError_, {Napi::String::New(env, code)});
  }
}

// One JS call. A thrown exception goes to Node's 'uncaughtException' machinery, never up the stack.
void FramePort::CallJs(Napi::FunctionReference& fn, std::initializer_list<napi_value> args) {
  if (fn.IsEmpty()) return;
  Napi::Env env = Env();
  napi_value recv = Value();
  napi_value result;
  napi_status st = napi_make_callback(env, async_, recv, fn.Value(), args.size(), args.begin(),
                                      &result);
  if (st != napi_ok || env.IsExceptionPending()) {
    if (env.IsExceptionPending()) {
      Napi::Error e = env.GetAndClearPendingException();
      napi_fatal_exception(env, e.Value());
    }
  }
}

void FramePort::Emit(uint32_t count, uint64_t bytes) {
  if (count == 0) return;
  rxFrames_ += count;
  rxBytes_ += bytes;
  ++rxBatches_;
  uint32_t avg = static_cast<uint32_t>(bytes / count);
  // Smooth a little so one odd batch does not swing the next batch size.
  avgFrame_ = (avgFrame_ * 3 + avg) / 4;
  uint32_t want = kBatchBytes / std::max<uint32_t>(avgFrame_, 256);
  vlen_ = std::clamp(want, kMinSlots, kMaxSlots);
  Napi::Env env = Env();
  CallJs(onFrames_, {slabRef_.Value(), offsetsRef_.Value(), Napi::Number::New(env, count)});
}

// Called for each received datagram in learnPeer mode, before its frame is delivered. Returns
// true when the peer changed (the caller delivers earlier frames first, then reports the peer).
bool FramePort::LearnFrom(const sockaddr_un& from, socklen_t fromLen) {
  if (peerConnected_ && SameAddr(from, fromLen, peer_, peerLen_)) return false;
  bool unnamed = fromLen <= offsetof(sockaddr_un, sun_path);
#if !VMNAT_LINUX
  // macOS reports an unbound sender as a whole empty sockaddr (sun_path all zero) rather than a
  // bare family; with no abstract namespace off Linux, an empty sun_path can only mean that.
  unnamed = unnamed || from.sun_path[0] == '\0';
#endif
  if (unnamed) {
    // An unbound sender: we cannot address it. Report it once so the user learns why replies fail.
    if (peerKnown_ && !peerConnected_ && peerLen_ == 0) return false;
    memset(&peer_, 0, sizeof peer_);
    peerLen_ = 0;
    peerConnected_ = false;
    peerKnown_ = true;
    return true;
  }
  int r;
  do r = connect(fd_, reinterpret_cast<const sockaddr*>(&from), fromLen);
  while (r != 0 && errno == EINTR);
  if (r != 0) return false;  // the sender is already gone: nothing to learn
  peer_ = from;
  peerLen_ = fromLen;
  peerConnected_ = true;
  peerKnown_ = true;
  return true;
}

void FramePort::ReportPeer() {
  if (onPeer_.IsEmpty()) return;
  Napi::Env env = Env();
  CallJs(onPeer_, {Napi::String::New(env, FormatUnixAddr(peer_, peerLen_))});
}

static bool VerifyL4Checksum(const uint8_t* f, size_t len);

void FramePort::ReadDgram() {
  for (uint32_t round = 0; round < kMaxRounds && !closed_ && !failed_; ++round) {
    const uint32_t vlen = vlen_;
    for (uint32_t i = 0; i < vlen; ++i) {
      iovs_[i].iov_base = slab_ + static_cast<size_t>(i) * stride_;
      iovs_[i].iov_len = stride_;
      msghdr& h = msgs_[i].msg_hdr;
      memset(&h, 0, sizeof h);
      h.msg_iov = &iovs_[i];
      h.msg_iovlen = 1;
      if (learnPeer_) {
        h.msg_name = &names_[i];
        h.msg_namelen = sizeof(sockaddr_un);
      }
    }
    int n = RecvBatch(vlen);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == ECONNRESET || err == ECONNREFUSED) {
        // A pending socket error reported (and cleared) by this receive: not fatal.
        if (learnPeer_) ForgetPeer();
        continue;
      }
      Fail(ErrnoName(err));
      return;
    }
    uint32_t count = 0;
    uint64_t bytes = 0;
    for (int i = 0; i < n && !closed_; ++i) {
      const msghdr& h = msgs_[i].msg_hdr;
      uint32_t len = msgs_[i].msg_len;
      if (learnPeer_ && LearnFrom(names_[i], h.msg_namelen)) {
        Emit(count, bytes);  // frames from before the change go first
        count = 0;
        bytes = 0;
        if (closed_) return;
        ReportPeer();
        if (closed_) return;
      }
      if ((h.msg_flags & MSG_TRUNC) || len > maxFrame_) {
        ++rxErrors_;
        continue;
      }
      // Summing here, while the frame is hot in cache, costs a third of what the same loop costs
      // in JavaScript; a frame that fails (or that we cannot place) is left to the stack, which
      // sums it again and counts the error.
      const uint8_t* frame = slab_ + static_cast<size_t>(i) * stride_;
      const bool l4Ok = VerifyL4Checksum(frame, len);
      offsets_[2 * count] = static_cast<int32_t>(static_cast<size_t>(i) * stride_);
      offsets_[2 * count + 1] = static_cast<int32_t>(len) | (l4Ok ? kRxL4ChecksumOk : 0);
      ++count;
      bytes += len;
    }
    if (closed_) return;
    Emit(count, bytes);
    // A short batch means the queue is (very likely) empty — unless the portable loop stopped
    // at an error, which the next round reports.
    if (static_cast<uint32_t>(n) < vlen && pendingRxErr_ == 0) return;
  }
}

// The stream framing (see the theory of operation): reads append to the slab; whole frames go to
// JS, a partial one moves to the front.
void FramePort::ReadStream() {
  const size_t cap = static_cast<size_t>(stride_) * kMaxSlots;
  for (uint32_t round = 0; round < kMaxRounds && !closed_ && !failed_; ++round) {
    const size_t space = std::min<size_t>(cap - rxFill_, kStreamRead);
    ssize_t r = recv(fd_, slab_ + rxFill_, space, MSG_DONTWAIT);
    if (r < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      Fail(ErrnoName(err));
      return;
    }
    if (r == 0) {
      if (rxFill_ > 0) ++rxErrors_;  // a frame cut off by the end of the stream
      Fail("EOF");
      return;
    }
    rxFill_ += static_cast<size_t>(r);
    size_t pos = 0;
    uint32_t count = 0;
    uint64_t bytes = 0;
    while (rxFill_ - pos >= 4) {
      const uint8_t* h = slab_ + pos;
      const uint32_t len = (static_cast<uint32_t>(h[0]) << 24) | (h[1] << 16) | (h[2] << 8) | h[3];
      if (len == 0 || len > maxFrame_) {
        ++rxErrors_;
        Emit(count, bytes);
        Fail("EPROTO");
        return;
      }
      if (rxFill_ - pos - 4 < len) break;
      const bool l4Ok = VerifyL4Checksum(h + 4, len);
      offsets_[2 * count] = static_cast<int32_t>(pos + 4);
      offsets_[2 * count + 1] = static_cast<int32_t>(len) | (l4Ok ? kRxL4ChecksumOk : 0);
      ++count;
      bytes += len;
      pos += 4 + len;
      if (count == kMaxSlots) {
        Emit(count, bytes);  // the frames stay where they are until this loop moves the tail
        if (closed_ || failed_) return;
        count = 0;
        bytes = 0;
      }
    }
    Emit(count, bytes);
    if (closed_ || failed_) return;
    if (pos > 0) {
      memmove(slab_, slab_ + pos, rxFill_ - pos);
      rxFill_ -= pos;
    }
    if (static_cast<size_t>(r) < space) return;  // drained for now
  }
}

// Up to `vlen` datagrams into msgs_[0..); the count, or -1 with errno (recvmmsg's contract).
int FramePort::RecvBatch(uint32_t vlen) {
#if VMNAT_LINUX
  return recvmmsg(fd_, msgs_.data(), vlen, MSG_DONTWAIT, nullptr);
#else
  if (pendingRxErr_ != 0) {
    errno = pendingRxErr_;
    pendingRxErr_ = 0;
    return -1;
  }
  uint32_t n = 0;
  while (n < vlen) {
    ssize_t r = recvmsg(fd_, &msgs_[n].msg_hdr, MSG_DONTWAIT);
    if (r < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (n == 0) return -1;
      // Deliver what we have first. EAGAIN just ends the batch; any other error was taken off
      // the socket by this call, so keep it for the next round.
      if (err != EAGAIN && err != EWOULDBLOCK) pendingRxErr_ = err;
      break;
    }
    msgs_[n].msg_len = static_cast<unsigned int>(r);
    ++n;
  }
  return static_cast<int>(n);
#endif
}

// The first `n` entries of txMsgs_; how many the kernel took, or -1 with errno (sendmmsg's
// contract: an error after the first datagram ends the batch and recurs on the next call).
int FramePort::SendBatch(uint32_t n) {
#if VMNAT_LINUX
  return sendmmsg(fd_, txMsgs_.data(), n, MSG_DONTWAIT | MSG_NOSIGNAL);
#else
  uint32_t i = 0;
  while (i < n) {
    ssize_t r = sendmsg(fd_, &txMsgs_[i].msg_hdr, MSG_DONTWAIT | kSendNoSignal);
    if (r < 0) {
      if (errno == EINTR) continue;
      return i == 0 ? -1 : static_cast<int>(i);
    }
    txMsgs_[i].msg_len = static_cast<unsigned int>(r);
    ++i;
  }
  return static_cast<int>(i);
#endif
}

// The one's-complement sum of [p, p+n) in native-order 16-bit words, folded to 16 bits (RFC 1071:
// the sum is byte-order independent as long as it is stored back in the same order).
static uint32_t SumWords(const uint8_t* p, size_t n, uint64_t sum) {
  while (n >= 32) {
    uint64_t w[4];
    memcpy(w, p, 32);
    sum += (w[0] & 0xffffffffu) + (w[0] >> 32) + (w[1] & 0xffffffffu) + (w[1] >> 32) +
           (w[2] & 0xffffffffu) + (w[2] >> 32) + (w[3] & 0xffffffffu) + (w[3] >> 32);
    p += 32;
    n -= 32;
  }
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    sum += (w & 0xffffffffu) + (w >> 32);
    p += 8;
    n -= 8;
  }
  while (n >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    sum += w;
    p += 2;
    n -= 2;
  }
  if (n == 1) sum += *p;  // little-endian: the odd byte is the low byte of a big-endian word
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint32_t>(sum);
}

// Where an Ethernet frame's TCP or UDP header starts and its transport protocol, for IPv4 (not a
// fragment) and IPv6 without extension headers; false for anything else. The IP lengths must
// cover the frame exactly up to its end (Ethernet padding is not summed: `l4End` is returned).
static bool LocateL4(const uint8_t* f, size_t len, uint32_t* l4Start, uint32_t* l4End, uint8_t* proto) {
  if (len < 14 + 20) return false;
  if (f[12] == 0x08 && f[13] == 0x00) {
    const uint8_t* ip = f + 14;
    if ((ip[0] >> 4) != 4) return false;
    const uint32_t ihl = (ip[0] & 0x0f) * 4u;
    const uint32_t total = (static_cast<uint32_t>(ip[2]) << 8) | ip[3];
    if (ihl < 20 || total < ihl || 14 + total > len) return false;
    if (((ip[6] & 0x3f) | ip[7]) != 0) return false;  // MF or an offset: a fragment
    *proto = ip[9];
    *l4Start = 14 + ihl;
    *l4End = 14 + total;
    return true;
  }
  if (f[12] == 0x86 && f[13] == 0xdd) {
    if (len < 14 + 40) return false;
    const uint8_t* ip = f + 14;
    if ((ip[0] >> 4) != 6) return false;
    const uint32_t payload = (static_cast<uint32_t>(ip[4]) << 8) | ip[5];
    if (14 + 40 + payload > len) return false;
    *proto = ip[6];
    *l4Start = 14 + 40;
    *l4End = 14 + 40 + payload;
    return true;
  }
  return false;
}

// The pseudo-header sum (RFC 793 / RFC 8200 §8.1) of the frame's IP header, native-order words.
static uint32_t PseudoHeaderSum(const uint8_t* f, uint32_t l4Len, uint8_t proto) {
  uint64_t sum = 0;
  if (f[12] == 0x08) {
    sum = SumWords(f + 14 + 12, 8, 0);
  } else {
    sum = SumWords(f + 14 + 8, 32, 0);
  }
  const uint8_t tail[4] = {static_cast<uint8_t>(l4Len >> 8), static_cast<uint8_t>(l4Len), 0, proto};
  return SumWords(tail, 4, sum);
}

// Finishes a TCP/UDP checksum whose field holds the pseudo-header sum (what vmnat's stack writes
// for links that complete checksums): the Internet checksum over the transport header and data
// goes in its place. False (frame left as is) when the frame is not one we can locate.
static bool CompleteL4Checksum(uint8_t* f, size_t len) {
  uint32_t start, end;
  uint8_t proto;
  if (!LocateL4(f, len, &start, &end, &proto)) return false;
  uint32_t field;
  if (proto == 6) field = 16;
  else if (proto == 17) field = 6;
  else return false;
  if (start + field + 2 > end) return false;
  uint16_t ck = static_cast<uint16_t>(~SumWords(f + start, end - start, 0));
  if (proto == 17 && ck == 0) ck = 0xffff;  // UDP: 0 means "no checksum" (RFC 768)
  memcpy(f + start + field, &ck, 2);
  return true;
}

// True when a received frame's TCP or UDP checksum is present and right (a UDP/IPv4 checksum of 0,
// "none", is left to the stack, as are frames LocateL4 does not understand).
static bool VerifyL4Checksum(const uint8_t* f, size_t len) {
  uint32_t start, end;
  uint8_t proto;
  if (!LocateL4(f, len, &start, &end, &proto)) return false;
  if (proto == 6) {
    if (end - start < 20) return false;
  } else if (proto == 17) {
    if (end - start < 8 || (f[start + 6] | f[start + 7]) == 0) return false;
  } else {
    return false;
  }
  const uint32_t sum = SumWords(f + start, end - start, PseudoHeaderSum(f, end - start, proto));
  return sum == 0xffff;
}

// The frame after a virtio_net_hdr whose NEEDS_CSUM flag is set: the 16-bit field at
// csum_start + csum_offset holds the pseudo-header sum; the Internet checksum over
// [csum_start, end) goes there (RFC 1071; what a NIC does for CHECKSUM_PARTIAL).
static bool CompletePartialChecksum(uint8_t* slot, size_t frameLen) {
  const uint32_t start = slot[6] | (slot[7] << 8);
  const uint32_t offset = slot[8] | (slot[9] << 8);
  uint8_t* frame = slot + 10;
  if (start + offset + 2 > frameLen) return false;
  const uint16_t ck = static_cast<uint16_t>(~SumWords(frame + start, frameLen - start, 0));
  memcpy(frame + start + offset, &ck, 2);
  return true;
}

void FramePort::ReadTap() {
  for (uint32_t round = 0; round < kMaxRounds && !closed_ && !failed_; ++round) {
    const uint32_t vlen = vlen_;
    uint32_t count = 0;
    uint64_t bytes = 0;
    bool drained = false;
    while (count < vlen) {
      uint8_t* slot = slab_ + static_cast<size_t>(count) * stride_;
      ssize_t r = read(fd_, slot, stride_);
      if (r < 0) {
        int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
          drained = true;
          break;
        }
        Emit(count, bytes);
        Fail(ErrnoName(err));
        return;
      }
      if (r == 0) {
        Emit(count, bytes);
        Fail("EOF");
        return;
      }
      if (static_cast<uint32_t>(r) > maxFrame_) {
        ++rxErrors_;
        continue;
      }
      // With a vnet header the frame follows it; a partial checksum (NEEDS_CSUM) is completed
      // here, so everything above sees whole frames with real checksums.
      const uint32_t skip = vnetHdr_ ? kVnetHdrLen : 0;
      if (static_cast<uint32_t>(r) < skip) {
        ++rxErrors_;
        continue;
      }
      r -= skip;
      if (vnetHdr_ && (slot[0] & 1) && !CompletePartialChecksum(slot, static_cast<size_t>(r))) {
        ++rxErrors_;
        continue;
      }
      // NEEDS_CSUM (we just computed it) or DATA_VALID (the kernel checked it): the layer-4
      // checksum is known good, and the stack need not sum the payload again.
      // Else (no header, or a guest that sums its own frames) we check it here, as for datagrams.
      const bool l4ChecksumOk =
          (vnetHdr_ && (slot[0] & 3) != 0) || VerifyL4Checksum(slot + skip, static_cast<size_t>(r));
      offsets_[2 * count] = static_cast<int32_t>(static_cast<size_t>(count) * stride_ + skip);
      offsets_[2 * count + 1] = static_cast<int32_t>(r) | (l4ChecksumOk ? kRxL4ChecksumOk : 0);
      ++count;
      bytes += static_cast<uint64_t>(r);
    }
    Emit(count, bytes);
    if (drained) return;
  }
}

Napi::Value FramePort::Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    ThrowType(env, "send(frame: Uint8Array)");
    return env.Undefined();
  }
  if (closed_ || failed_) return Napi::Boolean::New(env, false);
  napi_typedarray_type type;
  size_t length;
  void* data;
  napi_value arraybuffer;
  size_t byteOffset;
  if (napi_get_typedarray_info(env, info[0], &type, &length, &data, &arraybuffer, &byteOffset) !=
          napi_ok ||
      type != napi_uint8_array) {
    ThrowType(env, "send(frame: Uint8Array)");
    return env.Undefined();
  }
  // No second argument: a complete frame. A number >= 0 (vnet header links only): the TCP
  // checksum is partial; above 0 the number is also the GSO segment size. -1: the TCP/UDP
  // checksum is partial and we complete it here (any link).
  int32_t offload = kNoOffload;
  if (info.Length() > 1 && info[1].IsNumber()) {
    const int64_t g = info[1].As<Napi::Number>().Int64Value();
    if (g >= 0 && g < 65536) offload = static_cast<int32_t>(g);
    else if (g == -1) offload = kCompleteChecksum;
  }
  return Napi::Boolean::New(env, Enqueue(static_cast<const uint8_t*>(data), length, offload));
}

// Writes the virtio_net_hdr for one outgoing frame (little-endian, as tun expects on x86/arm64).
// offload >= 0: an IPv4 (or IPv6) TCP frame whose checksum field holds only the pseudo-header sum; the
// kernel completes it (NEEDS_CSUM) — or, on a netns guest's local receive path, trusts it as
// CHECKSUM_PARTIAL without summing the payload at all. offload > 0: the frame is also larger
// than the MTU and the kernel treats it as GSO with that segment size (the guest's stack receives
// it as one large segment, as after GRO).
static bool WriteVnetHdr(uint8_t* h, const uint8_t* frame, size_t len, int32_t offload) {
  memset(h, 0, 10);
  if (offload < 0) return true;
  // IPv4, or IPv6 with TCP right after its 40-byte header (vmnat writes no extension headers).
  const bool v6 = len >= 14 + 40 + 20 && frame[12] == 0x86 && frame[13] == 0xdd;
  if (!v6 && (len < 14 + 20 + 20 || frame[12] != 0x08 || frame[13] != 0x00)) return false;
  const uint32_t ihl = v6 ? 40u : (frame[14] & 0x0f) * 4u;
  if (v6 ? frame[14 + 6] != 6 : (ihl < 20 || len < 14 + ihl + 20 || frame[14 + 9] != 6)) return false;
  const uint32_t thl = (frame[14 + ihl + 12] >> 4) * 4u;
  const uint32_t hdrLen = 14 + ihl + thl;
  const uint32_t csumStart = 14 + ihl;
  h[0] = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
  if (offload > 0) {
    const uint32_t gsoSize = static_cast<uint32_t>(offload);
    h[1] = v6 ? 4 : 1;  // VIRTIO_NET_HDR_GSO_TCPV6 / VIRTIO_NET_HDR_GSO_TCPV4
    h[2] = hdrLen & 0xff;
    h[3] = hdrLen >> 8;
    h[4] = gsoSize & 0xff;
    h[5] = gsoSize >> 8;
  }
  h[6] = csumStart & 0xff;
  h[7] = csumStart >> 8;
  h[8] = 16;  // offset of the TCP checksum
  h[9] = 0;
  return true;
}

// qemu's stream framing: the frame's length, 4 bytes big-endian.
static void WriteLengthPrefix(uint8_t* dst, uint32_t frameLen) {
  dst[0] = static_cast<uint8_t>(frameLen >> 24);
  dst[1] = static_cast<uint8_t>(frameLen >> 16);
  dst[2] = static_cast<uint8_t>(frameLen >> 8);
  dst[3] = static_cast<uint8_t>(frameLen);
}

bool FramePort::Enqueue(const uint8_t* data, size_t frameLen, int32_t offload) {
  const size_t len = frameLen + txHdr_;
  const bool complete = offload == kCompleteChecksum;
  if (complete) offload = kNoOffload;
  if (!vnetHdr_ && offload != kNoOffload) {
    ++txDropped_;  // an offloaded frame cannot go on a link without the header
    return false;
  }
  if (len > kTxArenaBytes / 4) {
    ++txDropped_;
    return false;
  }
  if (!HasRoom(len)) {
    if (!wantWrite_) FlushQueue();
    if (!HasRoom(len)) {
      ++txDropped_;
      return false;
    }
  }
  uint8_t* dst = txArena_ + txUsed_;
  if (vnetHdr_) {
    if (!WriteVnetHdr(dst, data, frameLen, offload)) {
      ++txDropped_;
      return false;
    }
    dst += kVnetHdrLen;
  } else if (stream_) {
    WriteLengthPrefix(dst, static_cast<uint32_t>(frameLen));
    dst += 4;
  }
  txEntries_.push_back(TxEntry{txUsed_, static_cast<uint32_t>(len)});
  memcpy(dst, data, frameLen);
  // Summed from the copy, which is in cache now (a frame we cannot place goes as it is: the
  // stack only asks this of TCP/UDP frames it built).
  if (complete) CompleteL4Checksum(dst, frameLen);
  txUsed_ += static_cast<uint32_t>(len);
  const size_t queued = txEntries_.size() - txHead_;
  if (!wantWrite_ && (queued >= kTxSoftFrames || txUsed_ - txEntries_[txHead_].off >= kTxSoftBytes)) {
    FlushQueue();
  }
  return true;
}

// sendGso(frame, gsoSize): one IPv4 or IPv6 TCP frame larger than the MTU, its checksum field
// holding the pseudo-header sum (what vmnat's stack writes for offload links), cut here into
// frames of at most gsoSize payload bytes with complete checksums: software GSO, for peers that
// take MTU-sized frames only (a VM behind a datagram socket, a TAP with --no-tso). The stack then
// builds one frame per 64 KiB instead of one per MSS, in JavaScript: the per-frame work left is
// this loop's header copy and checksum, in C, while the payload is in cache.
Napi::Value FramePort::SendGso(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsNumber()) {
    ThrowType(env, "sendGso(frame: Uint8Array, gsoSize: number)");
    return env.Undefined();
  }
  if (closed_ || failed_) return Napi::Boolean::New(env, false);
  Napi::Uint8Array frame = info[0].As<Napi::Uint8Array>();
  const int64_t g = info[1].As<Napi::Number>().Int64Value();
  if (g < 1 || g > 65535) {
    ThrowType(env, "sendGso: gsoSize must be 1..65535");
    return env.Undefined();
  }
  return Napi::Boolean::New(env, EnqueueSegments(frame.Data(), frame.ByteLength(), static_cast<uint32_t>(g)));
}

// A TCP frame larger than the MTU, as software GSO cuts it (see SendGso).
struct GsoPlan {
  uint32_t l4Start;  // where the TCP header starts
  uint32_t hdrLen;   // Ethernet + IP + TCP headers: copied into every piece
  uint32_t thl;
  uint32_t payload;  // TCP payload bytes of the whole frame
  uint32_t seq0;
  uint16_t id0;  // IPv4 identification of the first piece; the next ones count up
  uint8_t flags0;
  bool v6;
};

// False unless `data` is an IPv4 or IPv6 (no extension headers) TCP frame whose lengths agree.
static bool PlanGso(const uint8_t* data, size_t len, GsoPlan* p) {
  uint32_t l4End;
  uint8_t proto;
  if (!LocateL4(data, len, &p->l4Start, &l4End, &proto) || proto != 6 || l4End - p->l4Start < 20) return false;
  p->v6 = data[12] == 0x86;
  p->thl = (data[p->l4Start + 12] >> 4) * 4u;
  p->hdrLen = p->l4Start + p->thl;
  if (p->thl < 20 || p->hdrLen > l4End) return false;
  p->payload = l4End - p->hdrLen;
  const uint8_t* t = data + p->l4Start;
  p->seq0 = (static_cast<uint32_t>(t[4]) << 24) | (t[5] << 16) | (t[6] << 8) | t[7];
  p->id0 = p->v6 ? 0 : static_cast<uint16_t>((data[14 + 4] << 8) | data[14 + 5]);
  p->flags0 = t[13];
  return true;
}

// Writes piece `i` (payload [off, off + its length)) at dst, complete with lengths, sequence
// number, flags (PSH and FIN on the last piece only), IPv4 id and header checksum, and the TCP
// checksum summed from the copy. Returns the piece's frame length.
static uint32_t WriteGsoPiece(const uint8_t* data, const GsoPlan& p, uint32_t gsoSize, uint32_t off,
                              uint32_t i, uint8_t* dst) {
  const uint32_t segPayload = std::min(gsoSize, p.payload - off);
  const uint32_t frameLen = p.hdrLen + segPayload;
  memcpy(dst, data, p.hdrLen);
  memcpy(dst + p.hdrLen, data + p.hdrLen + off, segPayload);
  uint8_t* ip = dst + 14;
  const uint32_t l4Len = p.thl + segPayload;
  if (p.v6) {
    ip[4] = static_cast<uint8_t>(l4Len >> 8);
    ip[5] = static_cast<uint8_t>(l4Len);
  } else {
    const uint32_t ihl = p.l4Start - 14;
    const uint32_t total = ihl + l4Len;
    const uint16_t id = static_cast<uint16_t>(p.id0 + i);
    ip[2] = static_cast<uint8_t>(total >> 8);
    ip[3] = static_cast<uint8_t>(total);
    ip[4] = static_cast<uint8_t>(id >> 8);
    ip[5] = static_cast<uint8_t>(id);
    ip[10] = ip[11] = 0;
    const uint16_t ipck = static_cast<uint16_t>(~SumWords(ip, ihl, 0));
    memcpy(ip + 10, &ipck, 2);
  }
  uint8_t* tcp = dst + p.l4Start;
  const uint32_t seq = p.seq0 + off;
  tcp[4] = static_cast<uint8_t>(seq >> 24);
  tcp[5] = static_cast<uint8_t>(seq >> 16);
  tcp[6] = static_cast<uint8_t>(seq >> 8);
  tcp[7] = static_cast<uint8_t>(seq);
  const bool last = off + segPayload >= p.payload;
  tcp[13] = last ? p.flags0 : static_cast<uint8_t>(p.flags0 & ~0x09);  // FIN and PSH: last only
  const uint16_t pseudo = static_cast<uint16_t>(PseudoHeaderSum(dst, l4Len, 6));
  memcpy(tcp + 16, &pseudo, 2);
  CompleteL4Checksum(dst, frameLen);
  return frameLen;
}

bool FramePort::EnqueueSegments(const uint8_t* data, size_t len, uint32_t gsoSize) {
  GsoPlan plan;
  if (!PlanGso(data, len, &plan)) {
    ++txDropped_;
    return false;
  }
  if (plan.payload <= gsoSize) return Enqueue(data, plan.hdrLen + plan.payload, kCompleteChecksum);
  const uint32_t hdr = txHdr_;
  ++txGsoFrames_;
  for (uint32_t off = 0, i = 0; off < plan.payload; off += gsoSize, i++) {
    const size_t need = plan.hdrLen + std::min(gsoSize, plan.payload - off) + hdr;
    if (!HasRoom(need)) {
      if (!wantWrite_) FlushQueue();
      if (!HasRoom(need)) {
        ++txDropped_;  // the rest of this frame is lost; TCP retransmits it
        return false;
      }
    }
    uint8_t* dst = txArena_ + txUsed_;
    if (vnetHdr_) {
      memset(dst, 0, kVnetHdrLen);  // a complete frame: no offload flags
      dst += kVnetHdrLen;
    } else if (stream_) {
      WriteLengthPrefix(dst, static_cast<uint32_t>(need - hdr));
      dst += 4;
    }
    WriteGsoPiece(data, plan, gsoSize, off, i, dst);
    txEntries_.push_back(TxEntry{txUsed_, static_cast<uint32_t>(need)});
    txUsed_ += static_cast<uint32_t>(need);
  }
  const size_t queued = txEntries_.size() - txHead_;
  if (!wantWrite_ && (queued >= kTxSoftFrames || txUsed_ - txEntries_[txHead_].off >= kTxSoftBytes)) {
    FlushQueue();
  }
  return true;
}

// gsoInto(frame, gsoSize, dst, dstOff, lengthPrefix, counts): software GSO for links whose
// sending is JavaScript's (the stream transport): the pieces are written one after another into
// dst from dstOff, each after a 4-byte big-endian length when lengthPrefix (qemu's stream
// framing). A frame within one piece is copied with its checksum completed. Returns the bytes
// written (counts[0] = pieces), 0 when dst has no room for all of them, -1 for a frame that is
// not TCP over IPv4/IPv6.
static Napi::Value GsoInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsTypedArray() ||
      !info[3].IsNumber() || !info[5].IsTypedArray()) {
    ThrowType(env, "gsoInto(frame, gsoSize, dst, dstOff, lengthPrefix, counts)");
    return env.Undefined();
  }
  Napi::Uint8Array src = info[0].As<Napi::Uint8Array>();
  const int64_t g = info[1].As<Napi::Number>().Int64Value();
  Napi::Uint8Array dstArr = info[2].As<Napi::Uint8Array>();
  const int64_t dstOff = info[3].As<Napi::Number>().Int64Value();
  const uint32_t lead = info[4].ToBoolean().Value() ? 4 : 0;
  Napi::Uint32Array counts = info[5].As<Napi::Uint32Array>();
  if (g < 1 || g > 65535 || dstOff < 0 || static_cast<size_t>(dstOff) > dstArr.ByteLength() || counts.ElementLength() < 1) {
    ThrowType(env, "gsoInto: gsoSize 1..65535, dstOff within dst, counts of length 1");
    return env.Undefined();
  }
  const uint32_t gso = static_cast<uint32_t>(g);
  GsoPlan plan;
  if (!PlanGso(src.Data(), src.ByteLength(), &plan)) return Napi::Number::New(env, -1);
  const uint32_t pieces = plan.payload == 0 ? 1 : (plan.payload + gso - 1) / gso;
  const size_t need = static_cast<size_t>(pieces) * (plan.hdrLen + lead) + plan.payload;
  uint8_t* out = dstArr.Data() + dstOff;
  if (need > dstArr.ByteLength() - static_cast<size_t>(dstOff)) return Napi::Number::New(env, 0);
  size_t at = 0;
  // qemu's stream framing: a 4-byte big-endian length before each frame.
  auto put = [&](uint32_t frameLen) {
    if (lead) {
      out[at] = out[at + 1] = 0;
      out[at + 2] = static_cast<uint8_t>(frameLen >> 8);
      out[at + 3] = static_cast<uint8_t>(frameLen);
    }
    at += lead + frameLen;
  };
  if (plan.payload <= gso) {
    const uint32_t frameLen = plan.hdrLen + plan.payload;
    memcpy(out + lead, src.Data(), frameLen);
    CompleteL4Checksum(out + lead, frameLen);
    put(frameLen);
  } else {
    for (uint32_t off = 0, i = 0; off < plan.payload; off += gso, i++) {
      put(WriteGsoPiece(src.Data(), plan, gso, off, i, out + at + lead));
    }
  }
  counts[0] = pieces;
  return Napi::Number::New(env, static_cast<double>(at));
}

// completeL4Checksum(frame): CompleteL4Checksum for JavaScript's own links (in place).
static Napi::Value CompleteL4ChecksumJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    ThrowType(env, "completeL4Checksum(frame)");
    return env.Undefined();
  }
  Napi::Uint8Array f = info[0].As<Napi::Uint8Array>();
  return Napi::Boolean::New(env, CompleteL4Checksum(f.Data(), f.ByteLength()));
}

void InitGso(Napi::Env env, Napi::Object exports) {
  exports.Set("gsoInto", Napi::Function::New(env, GsoInto, "gsoInto"));
  exports.Set("completeL4Checksum", Napi::Function::New(env, CompleteL4ChecksumJs, "completeL4Checksum"));
}

// Room for one more frame of `len` bytes, compacting the arena if the head has advanced.
bool FramePort::HasRoom(size_t len) {
  if (txHead_ > 0 && (txEntries_.size() >= kTxMaxFrames || txUsed_ + len > kTxArenaBytes)) {
    const uint32_t base = txEntries_[txHead_].off;
    memmove(txArena_, txArena_ + base, txUsed_ - base);
    txUsed_ -= base;
    txEntries_.erase(txEntries_.begin(), txEntries_.begin() + static_cast<ptrdiff_t>(txHead_));
    for (TxEntry& e : txEntries_) e.off -= base;
    txHead_ = 0;
  }
  return txEntries_.size() < kTxMaxFrames && txUsed_ + len <= kTxArenaBytes;
}

Napi::Value FramePort::Flush(const Napi::CallbackInfo& info) {
  if (!closed_ && !failed_) FlushQueue();
  return info.Env().Undefined();
}

void FramePort::FlushQueue() {
  if (closed_ || failed_) return;
  if (tap_) {
    FlushTap();
  } else if (stream_) {
    FlushStream();
  } else {
    FlushDgram();
  }
  if (txHead_ == txEntries_.size()) {
    txEntries_.clear();
    txHead_ = 0;
    txUsed_ = 0;
    txHeadSent_ = 0;
  }
  const bool want = txHead_ < txEntries_.size();
  if (want != wantWrite_) {
    wantWrite_ = want;
    UpdatePoll();
  }
}

void FramePort::FlushDgram() {
  while (txHead_ < txEntries_.size()) {
    const uint32_t n = static_cast<uint32_t>(txEntries_.size() - txHead_);
    for (uint32_t i = 0; i < n; ++i) {
      const TxEntry& e = txEntries_[txHead_ + i];
      txIovs_[i].iov_base = txArena_ + e.off;
      txIovs_[i].iov_len = e.len;
      msghdr& h = txMsgs_[i].msg_hdr;
      memset(&h, 0, sizeof h);
      h.msg_iov = &txIovs_[i];
      h.msg_iovlen = 1;
    }
    int r = SendBatch(n);
    if (r > 0) {
      for (int i = 0; i < r; ++i) txBytes_ += txEntries_[txHead_ + i].len;
      txFrames_ += static_cast<uint64_t>(r);
      txHead_ += static_cast<size_t>(r);
      ++txBatches_;
      continue;
    }
    int err = r < 0 ? errno : EAGAIN;
    switch (err) {
      case EINTR:
        continue;
      case EAGAIN:
#if EWOULDBLOCK != EAGAIN
      case EWOULDBLOCK:
#endif
        return;  // stays queued; FlushQueue arms POLLOUT
      case EMSGSIZE:
      case EINVAL:
      case ENOBUFS:
      case ENOMEM:
        // This one frame cannot go (too big, or the kernel is short of memory): drop it alone.
        ++txDropped_;
        ++txHead_;
        continue;
      case ENOTCONN:
      case EDESTADDRREQ:
        // No peer (not learned yet, or an unbound sender we cannot answer): drop what is queued.
        if (learnPeer_) {
          if (peerConnected_) {
            ForgetPeer();
          } else {
            DropQueued();
          }
          return;
        }
        Fail(ErrnoName(err));
        return;
      case ECONNREFUSED:
      case EPERM:
      case ECONNRESET:
        // The peer died (the kernel has dissolved our association) or now talks to someone else.
        if (learnPeer_) {
          ForgetPeer();
          return;
        }
        Fail(ErrnoName(err));
        return;
      default:
        Fail(ErrnoName(err));
        return;
    }
  }
}

// Everything queued, prefixes included, in as few sendmsg calls as the kernel takes. txHeadSent_
// bytes of the head frame are already out (an earlier partial write).
void FramePort::FlushStream() {
  const size_t head0 = txHead_;
  while (txHead_ < txEntries_.size()) {
    const uint32_t n = static_cast<uint32_t>(std::min<size_t>(txEntries_.size() - txHead_, txIovs_.size()));
    for (uint32_t i = 0; i < n; ++i) {
      const TxEntry& e = txEntries_[txHead_ + i];
      const uint32_t skip = i == 0 ? txHeadSent_ : 0;
      txIovs_[i].iov_base = txArena_ + e.off + skip;
      txIovs_[i].iov_len = e.len - skip;
    }
    msghdr h;
    memset(&h, 0, sizeof h);
    h.msg_iov = txIovs_.data();
    h.msg_iovlen = static_cast<decltype(h.msg_iovlen)>(n);
    ssize_t r = sendmsg(fd_, &h, MSG_DONTWAIT | kSendNoSignal);
    if (r < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      Fail(ErrnoName(err));
      return;
    }
    size_t left = static_cast<size_t>(r);
    while (left > 0 && txHead_ < txEntries_.size()) {
      const TxEntry& e = txEntries_[txHead_];
      const size_t rest = e.len - txHeadSent_;
      if (left < rest) {
        txHeadSent_ += static_cast<uint32_t>(left);
        left = 0;
        break;
      }
      left -= rest;
      txHeadSent_ = 0;
      ++txFrames_;
      txBytes_ += e.len - 4;  // frame bytes, not the prefix
      ++txHead_;
    }
    if (txHeadSent_ > 0) break;  // the kernel took part of a frame: it is full for now
  }
  if (txHead_ > head0) ++txBatches_;
}

void FramePort::FlushTap() {
  const size_t head0 = txHead_;
  while (txHead_ < txEntries_.size()) {
    const TxEntry& e = txEntries_[txHead_];
    ssize_t r = write(fd_, txArena_ + e.off, e.len);
    if (r >= 0) {
      ++txFrames_;
      txBytes_ += e.len - (vnetHdr_ ? kVnetHdrLen : 0);  // frame bytes, not the header
      ++txHead_;
      continue;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) return;
    if (err == EIO || err == EINVAL || err == EMSGSIZE || err == ENOBUFS || err == ENOMEM) {
      // EIO: the interface is down; the others concern this frame. Drop it, keep the port.
      ++txDropped_;
      ++txHead_;
      continue;
    }
    Fail(ErrnoName(err));
    return;
  }
  if (txHead_ > head0) ++txBatches_;
}

Napi::Value FramePort::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("rxFrames", Napi::Number::New(env, static_cast<double>(rxFrames_)));
  o.Set("rxBytes", Napi::Number::New(env, static_cast<double>(rxBytes_)));
  o.Set("txFrames", Napi::Number::New(env, static_cast<double>(txFrames_)));
  o.Set("txBytes", Napi::Number::New(env, static_cast<double>(txBytes_)));
  o.Set("txDropped", Napi::Number::New(env, static_cast<double>(txDropped_)));
  o.Set("txGsoFrames", Napi::Number::New(env, static_cast<double>(txGsoFrames_)));
  o.Set("rxErrors", Napi::Number::New(env, static_cast<double>(rxErrors_)));
  o.Set("rxBatches", Napi::Number::New(env, static_cast<double>(rxBatches_)));
  o.Set("txBatches", Napi::Number::New(env, static_cast<double>(txBatches_)));
  o.Set("txQueued", Napi::Number::New(env, static_cast<double>(txEntries_.size() - txHead_)));
  return o;
}

}  // namespace vmnat
