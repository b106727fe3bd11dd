// HostTcp: the host side of dialed TCP flows, owned by the addon (see host_tcp.cc).
#pragma once

#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <vector>

namespace vmnat {

class HostTcp : public Napi::ObjectWrap<HostTcp> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit HostTcp(const Napi::CallbackInfo& info);
  ~HostTcp() override;

  // Event kinds passed to JS as the first argument of onEvent(kind, slot, n, code).
  enum Event : int32_t { kConnected = 1, kConnectFailed = 2, kData = 3, kEof = 4, kError = 5, kWritable = 6 };
  // readNow's answer for end of stream (a negative errno is never this large).
  static constexpr int32_t kReadEof = -1000000;
  // Added to connect()'s slot when the connect had completed inside the call (no event follows).
  static constexpr int64_t kConnectedNow = 1 << 24;

 private:
  struct Sock {
    uv_poll_t poll;  // first: the close callback casts the handle back to its Sock
    HostTcp* owner;
    int fd;
    uint32_t slot;
    bool connecting;
    bool reading;    // the flow wants host bytes (not paused, no EOF yet)
    bool wantWrite;  // JS holds bytes the kernel refused (EAGAIN): tell it when writable
    bool closed;
  };

  Napi::Value Connect(const Napi::CallbackInfo& info);
  Napi::Value Adopt(const Napi::CallbackInfo& info);
  int64_t Install(int fd, bool connecting, bool reading);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value ReadNow(const Napi::CallbackInfo& info);
  Napi::Value ShutdownWrite(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value SetReading(const Napi::CallbackInfo& info);
  Napi::Value Ends(const Napi::CallbackInfo& info);
  Napi::Value Count(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void EnvCleanup(void* arg);
  void HandlePoll(Sock* s, int status, int events);
  void ReadSome(Sock* s);
  void Update(Sock* s);
  void CloseSock(Sock* s, bool reset);
  void Teardown();
  Sock* Get(const Napi::CallbackInfo& info, size_t i);
  bool CallJs(int32_t kind, uint32_t slot, double n, const char* code);

  Napi::AsyncContext async_;
  Napi::FunctionReference onEvent_;
  Napi::Reference<Napi::Buffer<uint8_t>> readRef_;
  uint8_t* readBuf_ = nullptr;
  size_t readLen_ = 0;
  uv_loop_t* loop_ = nullptr;
  std::vector<Sock*> slots_;
  std::vector<uint32_t> free_;
  uint32_t open_ = 0;
  bool cleanupHook_ = false;
  bool tornDown_ = false;
};

}  // namespace vmnat
