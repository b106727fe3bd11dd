// vmnat's native addon entry point. A thin layer over system calls Node lacks; no protocol logic
// lives here. The TypeScript contract is src/link/native.ts.
#include <napi.h>

#include "frame_port.h"
#include "sockets.h"

namespace vmnat {
void InitTap(Napi::Env env, Napi::Object exports);
void InitIcmp(Napi::Env env, Napi::Object exports);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vmnat::InitSockets(env, exports);
  vmnat::InitTap(env, exports);
  vmnat::InitIcmp(env, exports);
  exports.Set("FramePort", vmnat::FramePort::Init(env));
  return exports;
}

NODE_API_MODULE(vmnat, Init)
