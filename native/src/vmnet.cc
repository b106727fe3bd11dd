// macOS vmnet.framework: the host-only and bridged modes on macOS (src/modes/vmnet-link.ts).
//
// UNTESTED: this file is compiled only on macOS (VMNAT_HAVE_VMNET, platform.h); the Linux build and
// the portable build compile the stub at the bottom, which throws ENOTSUP. It follows Apple's vmnet
// documentation and what vmnet-helper (github.com/nirs/vmnet-helper, helper.c) does, and nothing
// more.
//
// Theory of operation
//   new Vmnet(options, onFrames, onError) starts one vmnet interface, as vmnet-helper does: an xpc
//   dictionary with vmnet_operation_mode_key (VMNET_HOST_MODE or VMNET_BRIDGED_MODE),
//   vmnet_shared_interface_name_key for bridged (the physical interface, e.g. en0), the DHCP range
//   of host mode (vmnet_start_address_key, vmnet_end_address_key, vmnet_subnet_mask_key; vmnet's
//   own DHCP server serves it), vmnet_interface_id_key (a UUID: the same one gives the same MAC
//   across runs) and vmnet_enable_isolation_key. vmnet_start_interface completes on a serial
//   dispatch queue of ours; the constructor waits for that completion (a semaphore, as vmnet-helper)
//   and keeps the parameters vmnet answered (MAC, MTU, max packet size, addresses).
//   Frames in: vmnet calls our VMNET_INTERFACE_PACKETS_AVAILABLE block on that queue. The block
//   does not read: it hands the event to Node's loop through a thread-safe function (at most one
//   pending at a time), and the loop thread drains the interface with vmnet_read in batches of up
//   to kMaxPackets, copying each packet into a Buffer and calling onFrames(frames) once per batch.
//   So every frame is handled on Node's thread, like the other links' frames.
//   Frames out: write(frame) is one vmnet_write of one packet from the loop thread (vmnet copies it).
//   close() clears the event callback, stops the interface (waiting for vmnet's completion) and
//   releases the thread-safe function.
//
// vmnet needs root, or the com.apple.vm.networking entitlement: without either,
// vmnet_start_interface fails with VMNET_INVALID_ACCESS, and the error says so.
#include "common.h"

#if defined(__APPLE__) && !defined(VMNAT_PORTABLE)
#define VMNAT_HAVE_VMNET 1
#else
#define VMNAT_HAVE_VMNET 0
#endif

#if VMNAT_HAVE_VMNET
#include <dispatch/dispatch.h>
#include <uuid/uuid.h>
#include <vmnet/vmnet.h>

#include <atomic>
#include <string>
#include <vector>

namespace vmnat {

namespace {

// vmnet_read returns at most 200 packets per call (Apple); vmnet-helper found 128 enough.
constexpr int kMaxPackets = 64;

const char* VmnetStatusName(vmnet_return_t v) {
  switch (v) {
    case VMNET_SUCCESS: return "VMNET_SUCCESS";
    case VMNET_FAILURE: return "VMNET_FAILURE";
    case VMNET_MEM_FAILURE: return "VMNET_MEM_FAILURE";
    case VMNET_INVALID_ARGUMENT: return "VMNET_INVALID_ARGUMENT";
    case VMNET_SETUP_INCOMPLETE: return "VMNET_SETUP_INCOMPLETE";
    case VMNET_INVALID_ACCESS: return "VMNET_INVALID_ACCESS";
    case VMNET_PACKET_TOO_BIG: return "VMNET_PACKET_TOO_BIG";
    case VMNET_BUFFER_EXHAUSTED: return "VMNET_BUFFER_EXHAUSTED";
    case VMNET_TOO_MANY_PACKETS: return "VMNET_TOO_MANY_PACKETS";
    default: return "VMNET_UNKNOWN_STATUS";
  }
}

std::string OptString(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
}

}  // namespace

class Vmnet : public Napi::ObjectWrap<Vmnet> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Vmnet", {InstanceMethod("info", &Vmnet::Info), InstanceMethod("write", &Vmnet::Write), InstanceMethod("close", &Vmnet::Close)});
  }

  // new Vmnet({ mode: 'host'|'bridged', sharedInterface?, startAddress?, endAddress?, subnetMask?,
  //             interfaceId?, isolation? }, onFrames(frames: Buffer[]), onError(code: string))
  explicit Vmnet(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Vmnet>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsFunction() || !info[2].IsFunction()) {
      ThrowType(env, "Vmnet(options, onFrames, onError)");
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    onFrames_ = Napi::Persistent(info[1].As<Napi::Function>());
    onError_ = Napi::Persistent(info[2].As<Napi::Function>());
    const std::string mode = OptString(o, "mode");
    xpc_object_t desc = xpc_dictionary_create(nullptr, nullptr, 0);
    if (mode == "bridged") {
      xpc_dictionary_set_uint64(desc, vmnet_operation_mode_key, VMNET_BRIDGED_MODE);
      xpc_dictionary_set_string(desc, vmnet_shared_interface_name_key, OptString(o, "sharedInterface").c_str());
    } else {
      xpc_dictionary_set_uint64(desc, vmnet_operation_mode_key, VMNET_HOST_MODE);
      const std::string start = OptString(o, "startAddress");
      const std::string end = OptString(o, "endAddress");
      const std::string mask = OptString(o, "subnetMask");
      if (!start.empty()) xpc_dictionary_set_string(desc, vmnet_start_address_key, start.c_str());
      if (!end.empty()) xpc_dictionary_set_string(desc, vmnet_end_address_key, end.c_str());
      if (!mask.empty()) xpc_dictionary_set_string(desc, vmnet_subnet_mask_key, mask.c_str());
      xpc_dictionary_set_bool(desc, vmnet_enable_isolation_key, o.Get("isolation").ToBoolean().Value());
    }
    const std::string id = OptString(o, "interfaceId");
    if (!id.empty()) {
      uuid_t uuid;
      if (uuid_parse(id.c_str(), uuid) != 0) {
        xpc_release(desc);
        ThrowType(env, "Vmnet: interfaceId is not a UUID");
        return;
      }
      xpc_dictionary_set_uuid(desc, vmnet_interface_id_key, uuid);
    }

    queue_ = dispatch_queue_create("vmnat.vmnet", DISPATCH_QUEUE_SERIAL);
    dispatch_semaphore_t done = dispatch_semaphore_create(0);
    __block vmnet_return_t startStatus = VMNET_FAILURE;
    __block uint64_t mtu = 0, maxPacket = 0;
    __block std::string mac, startAddr, endAddr, maskAddr;
    iface_ = vmnet_start_interface(desc, queue_, ^(vmnet_return_t status, xpc_object_t param) {
      startStatus = status;
      if (status == VMNET_SUCCESS && param != nullptr) {
        mtu = xpc_dictionary_get_uint64(param, vmnet_mtu_key);
        maxPacket = xpc_dictionary_get_uint64(param, vmnet_max_packet_size_key);
        const char* m = xpc_dictionary_get_string(param, vmnet_mac_address_key);
        if (m != nullptr) mac = m;
        const char* s = xpc_dictionary_get_string(param, vmnet_start_address_key);
        if (s != nullptr) startAddr = s;
        const char* e = xpc_dictionary_get_string(param, vmnet_end_address_key);
        if (e != nullptr) endAddr = e;
        const char* k = xpc_dictionary_get_string(param, vmnet_subnet_mask_key);
        if (k != nullptr) maskAddr = k;
      }
      dispatch_semaphore_signal(done);
    });
    xpc_release(desc);
    if (iface_ != nullptr) dispatch_semaphore_wait(done, DISPATCH_TIME_FOREVER);
    dispatch_release(done);
    if (iface_ == nullptr || startStatus != VMNET_SUCCESS) {
      iface_ = nullptr;
      const char* name = VmnetStatusName(startStatus);
      std::string msg = std::string(name) + ": vmnet_start_interface failed";
      if (startStatus == VMNET_INVALID_ACCESS) msg += " (vmnet needs root, or the com.apple.vm.networking entitlement: run vmnat with sudo)";
      Napi::Error e = Napi::Error::New(env, msg);
      e.Set("code", Napi::String::New(env, name));
      e.ThrowAsJavaScriptException();
      return;
    }
    maxPacketSize_ = maxPacket > 0 ? maxPacket : 1514;
    info_ = Napi::Persistent(Napi::Object::New(env));
    info_.Value().Set("mac", Napi::String::New(env, mac));
    info_.Value().Set("mtu", Napi::Number::New(env, static_cast<double>(mtu)));
    info_.Value().Set("maxPacketSize", Napi::Number::New(env, static_cast<double>(maxPacketSize_)));
    if (!startAddr.empty()) info_.Value().Set("startAddress", Napi::String::New(env, startAddr));
    if (!endAddr.empty()) info_.Value().Set("endAddress", Napi::String::New(env, endAddr));
    if (!maskAddr.empty()) info_.Value().Set("subnetMask", Napi::String::New(env, maskAddr));

    buffers_.resize(static_cast<size_t>(kMaxPackets) * maxPacketSize_);
    // The loop side of vmnet's event: drain the interface on Node's thread.
    tsfn_ = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "vmnat-vmnet", 0, 1);
    tsfn_.Unref(env);
    Vmnet* self = this;
    vmnet_return_t st = vmnet_interface_set_event_callback(iface_, VMNET_INTERFACE_PACKETS_AVAILABLE, queue_,
                                                           ^(interface_event_t, xpc_object_t) {
                                                             self->Signal();
                                                           });
    if (st != VMNET_SUCCESS) {
      StopInterface();
      Napi::Error e = Napi::Error::New(env, std::string(VmnetStatusName(st)) + ": vmnet_interface_set_event_callback failed");
      e.Set("code", Napi::String::New(env, VmnetStatusName(st)));
      e.ThrowAsJavaScriptException();
    }
  }

  ~Vmnet() override {
    StopInterface();
    if (queue_ != nullptr) dispatch_release(queue_);
  }

 private:
  // On vmnet's queue: one pending drain at a time is enough (a drain reads until empty).
  void Signal() {
    if (pending_.exchange(true)) return;
    tsfn_.NonBlockingCall(this, [](Napi::Env env, Napi::Function, Vmnet* v) { v->Drain(env); });
  }

  // On Node's thread.
  void Drain(Napi::Env env) {
    pending_.store(false);
    if (iface_ == nullptr) return;
    Napi::HandleScope scope(env);
    for (;;) {
      struct vmpktdesc packets[kMaxPackets];
      struct iovec iovs[kMaxPackets];
      int count = kMaxPackets;
      for (int i = 0; i < count; i++) {
        iovs[i].iov_base = buffers_.data() + static_cast<size_t>(i) * maxPacketSize_;
        iovs[i].iov_len = maxPacketSize_;
        packets[i].vm_pkt_iov = &iovs[i];
        packets[i].vm_pkt_iovcnt = 1;
        packets[i].vm_pkt_size = maxPacketSize_;
        packets[i].vm_flags = 0;
      }
      vmnet_return_t st = vmnet_read(iface_, packets, &count);
      if (st != VMNET_SUCCESS) {
        onError_.Call({Napi::String::New(env, VmnetStatusName(st))});
        return;
      }
      if (count <= 0) return;
      Napi::Array frames = Napi::Array::New(env, static_cast<size_t>(count));
      for (int i = 0; i < count; i++) {
        frames.Set(static_cast<uint32_t>(i), Napi::Buffer<uint8_t>::Copy(env, static_cast<uint8_t*>(iovs[i].iov_base), packets[i].vm_pkt_size));
      }
      onFrames_.Call({frames});
      if (env.IsExceptionPending() || iface_ == nullptr) return;
    }
  }

  Napi::Value Info(const Napi::CallbackInfo& info) { return info_.IsEmpty() ? info.Env().Undefined() : info_.Value(); }

  // write(frame) → true if vmnet took it.
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (iface_ == nullptr || info.Length() < 1 || !info[0].IsTypedArray()) return Napi::Boolean::New(env, false);
    Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
    struct iovec iov;
    iov.iov_base = a.Data();
    iov.iov_len = a.ByteLength();
    struct vmpktdesc packet;
    packet.vm_pkt_iov = &iov;
    packet.vm_pkt_iovcnt = 1;
    packet.vm_pkt_size = a.ByteLength();
    packet.vm_flags = 0;
    int count = 1;
    vmnet_return_t st = vmnet_write(iface_, &packet, &count);
    return Napi::Boolean::New(env, st == VMNET_SUCCESS && count == 1);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    StopInterface();
    return info.Env().Undefined();
  }

  void StopInterface() {
    if (iface_ == nullptr) return;
    interface_ref iface = iface_;
    iface_ = nullptr;
    vmnet_interface_set_event_callback(iface, VMNET_INTERFACE_PACKETS_AVAILABLE, nullptr, nullptr);
    dispatch_semaphore_t done = dispatch_semaphore_create(0);
    vmnet_return_t st = vmnet_stop_interface(iface, queue_, ^(vmnet_return_t) {
      dispatch_semaphore_signal(done);
    });
    if (st == VMNET_SUCCESS) dispatch_semaphore_wait(done, DISPATCH_TIME_FOREVER);
    dispatch_release(done);
    tsfn_.Release();
  }

  interface_ref iface_ = nullptr;
  dispatch_queue_t queue_ = nullptr;
  size_t maxPacketSize_ = 1514;
  std::vector<uint8_t> buffers_;
  std::atomic<bool> pending_{false};
  Napi::ThreadSafeFunction tsfn_;
  Napi::FunctionReference onFrames_;
  Napi::FunctionReference onError_;
  Napi::ObjectReference info_;
};

void InitVmnet(Napi::Env env, Napi::Object exports) {
  exports.Set("Vmnet", Vmnet::Init(env));
}

}  // namespace vmnat

#else  // Linux, and the portable build: no vmnet.framework

namespace vmnat {

void InitVmnet(Napi::Env env, Napi::Object exports) {
  // No `Vmnet` export: src/modes/vmnet-link.ts says "vmnet is macOS-only" when it is absent.
  (void)env;
  (void)exports;
}

}  // namespace vmnat

#endif
