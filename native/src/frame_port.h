// FramePort: batched frame I/O on one fd (see frame_port.cc for the theory of operation).
#pragma once

#include <napi.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "platform.h"

namespace vmnat {

// One datagram of a batch. On Linux it is the kernel's mmsghdr (recvmmsg/sendmmsg take an array
// of them); the portable branch keeps the same two fields and loops recvmsg/sendmsg over the
// array, so the batching code above it is the same on both.
#if VMNAT_LINUX
using MsgVec = mmsghdr;
#else
struct MsgVec {
  msghdr msg_hdr;
  unsigned int msg_len;
};
#endif

class FramePort : public Napi::ObjectWrap<FramePort> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit FramePort(const Napi::CallbackInfo& info);
  ~FramePort() override;

 private:
  struct TxEntry {
    uint32_t off;
    uint32_t len;
  };
  static constexpr uint32_t kVnetHdrLen = 10;

  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Send(const Napi::CallbackInfo& info);
  Napi::Value SendGso(const Napi::CallbackInfo& info);
  Napi::Value Flush(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value ResetPeer(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void EnvCleanup(void* arg);
  void HandlePoll(int status, int events);
  void ReadDgram();
  int RecvBatch(uint32_t vlen);
  int SendBatch(uint32_t n);
  void ReadTap();
  void ReadStream();
  bool LearnFrom(const sockaddr_un& from, socklen_t fromLen);
  void ReportPeer();
  void ForgetPeer();
  void Emit(uint32_t count, uint64_t bytes);
  void CallJs(Napi::FunctionReference& fn, std::initializer_list<napi_value> args);
  void Fail(const char* code);
  void UpdatePoll();
  void Teardown();
  // offload: kNoOffload for a complete frame; >= 0: partial TCP checksum, and GSO size if > 0
  // (vnet header links only); kCompleteChecksum: the TCP/UDP checksum field holds only the
  // pseudo-header sum and the port sums the rest while it queues the frame (any link).
  static constexpr int32_t kNoOffload = -1;
  static constexpr int32_t kCompleteChecksum = -2;
  // Or'ed into a received frame's length in the offsets array: the L4 checksum is known good.
  static constexpr int32_t kRxL4ChecksumOk = 1 << 30;
  bool Enqueue(const uint8_t* data, size_t len, int32_t offload);
  bool EnqueueSegments(const uint8_t* data, size_t len, uint32_t gsoSize);
  bool HasRoom(size_t len);
  void DropQueued();
  void FlushQueue();
  void FlushDgram();
  void FlushTap();
  void FlushStream();

  Napi::AsyncContext async_;
  Napi::FunctionReference onFrames_;
  Napi::FunctionReference onPeer_;
  Napi::FunctionReference onError_;
  Napi::Reference<Napi::Buffer<uint8_t>> slabRef_;
  Napi::Reference<Napi::Int32Array> offsetsRef_;

  int fd_ = -1;
  bool tap_ = false;
  bool stream_ = false;   // qemu's stream framing on a connected stream socket
  uint32_t txHdr_ = 0;    // bytes queued before each frame: a vnet header, a length, or none
  bool vnetHdr_ = false;  // TAP frames carry a virtio_net_hdr both ways
  bool learnPeer_ = false;
  bool reading_ = false;
  bool wantWrite_ = false;
  bool closed_ = false;
  bool failed_ = false;
  bool pinned_ = false;
  bool cleanupHook_ = false;
  uv_poll_t* poll_ = nullptr;

  // Receive side.
  uint32_t maxFrame_ = 0;
  uint32_t stride_ = 0;
  uint32_t vlen_ = 64;
  uint32_t avgFrame_ = 4096;
  uint8_t* slab_ = nullptr;
  int32_t* offsets_ = nullptr;
  size_t rxFill_ = 0;  // stream: bytes in the slab not yet delivered (a partial frame)
  std::vector<MsgVec> msgs_;
  std::vector<iovec> iovs_;
  std::vector<sockaddr_un> names_;
  // Portable receive loop: an error met after some datagrams of a batch were read, reported by
  // the next RecvBatch (recvmmsg keeps it pending in the socket the same way).
  int pendingRxErr_ = 0;

  // learnPeer state.
  sockaddr_un peer_{};
  socklen_t peerLen_ = 0;
  bool peerConnected_ = false;
  bool peerKnown_ = false;  // onPeer has reported the current peer (named or not)

  // Send queue: frames [txHead_, size) of txEntries_, bytes in txArena_[.. txUsed_).
  std::vector<TxEntry> txEntries_;
  size_t txHead_ = 0;
  // kTxArenaBytes of anonymous memory, mapped not committed: a vector's zero-fill made all 4 MiB
  // resident at start; now only what a backlog of frames ever reached is.
  uint8_t* txArena_ = nullptr;
  uint32_t txUsed_ = 0;
  uint32_t txHeadSent_ = 0;  // stream: bytes of the head frame already written
  std::vector<MsgVec> txMsgs_;
  std::vector<iovec> txIovs_;

  uint64_t rxFrames_ = 0, rxBytes_ = 0, txFrames_ = 0, txBytes_ = 0;
  uint64_t txGsoFrames_ = 0;
  uint64_t txDropped_ = 0, rxErrors_ = 0, rxBatches_ = 0, txBatches_ = 0;
};

// gsoInto / completeL4Checksum: the same C for links JavaScript sends on (frame_port.cc).
void InitGso(Napi::Env env, Napi::Object exports);

}  // namespace vmnat
