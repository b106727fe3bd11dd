// vmnat's native addon entry point. A thin layer over system calls Node lacks and the per-frame
// work JavaScript should not do (checksums, software GSO); no protocol state lives here. The
// TypeScript contract is src/link/native.ts.
#include <napi.h>

#include "frame_port.h"
#include "host_tcp.h"
#include "platform.h"
#include "sockets.h"

namespace vmnat {
void InitTap(Napi::Env env, Napi::Object exports);
void InitIcmp(Napi::Env env, Napi::Object exports);
void InitHostIf(Napi::Env env, Napi::Object exports);
void InitVmnet(Napi::Env env, Napi::Object exports);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vmnat::InitSockets(env, exports);
  vmnat::InitTap(env, exports);
  vmnat::InitIcmp(env, exports);
  vmnat::InitHostIf(env, exports);
  vmnat::InitVmnet(env, exports);
  exports.Set("FramePort", vmnat::FramePort::Init(env));
  exports.Set("HostTcp", vmnat::HostTcp::Init(env));
  vmnat::InitGso(env, exports);
  // Which side of the platform guards this binary was built with: tests check they load the
  // build they mean to test.
  Napi::Object build = Napi::Object::New(env);
  build.Set("flavor", Napi::String::New(env, vmnat::kBuildFlavor));
#ifdef __APPLE__
  build.Set("platform", Napi::String::New(env, "darwin"));
#else
  build.Set("platform", Napi::String::New(env, "linux"));
#endif
  exports.Set("build", build);
  return exports;
}

NODE_API_MODULE(vmnat, Init)
