/**
 * macOS: a vmnet.framework interface as the switch's uplink (host-only and bridged modes).
 *
 * UNTESTED on a Mac: the addon's `Vmnet` (native/src/vmnet.cc) exists only in a macOS build. The
 * TypeScript side is checked with a stand-in for it (test/unit/modes.test.ts).
 *
 * Theory of operation: `Vmnet` starts the interface (VMNET_HOST_MODE with vmnet's own DHCP range,
 * or VMNET_BRIDGED_MODE on a physical interface), and hands received packets to Node's loop in
 * batches; each batch is delivered to the switch as one batch of frames. `send` writes one frame
 * with vmnet_write at once (vmnet has no batch we could hold frames for), so `flush` has nothing to
 * do. vmnet refuses to start without root or the com.apple.vm.networking entitlement; the error
 * says so (exit 2 from the CLI).
 */
import type { NativeAddon, NativeVmnet, NativeVmnetOptions } from '../link/native.ts';
import type { LinkOptions } from '../link/native-link.ts';
import { LinkError } from '../link/errors.ts';
import { createLinkStats, type FrameBatchHandler, type Link, type LinkStats } from '../link/types.ts';
import { UplinkError } from './uplink.ts';

export class VmnetLink implements Link {
  readonly kind = 'vmnet' as const;
  readonly stats: LinkStats = createLinkStats();
  private handler: FrameBatchHandler | undefined;
  private closed = false;
  private vmnet!: NativeVmnet;

  private constructor(
    private readonly options: NativeVmnetOptions,
    private readonly linkOptions: LinkOptions,
  ) {}

  static open(options: NativeVmnetOptions, linkOptions: LinkOptions, native: NativeAddon): VmnetLink {
    const flag = options.mode === 'bridged' ? '--bridge' : '--mode';
    if (native.Vmnet === undefined) throw new UplinkError(flag, `vmnet is macOS-only; this build of vmnat has none (${native.build.flavor})`, 'ENOTSUP');
    const link = new VmnetLink(options, linkOptions);
    try {
      link.vmnet = new native.Vmnet(
        options,
        (frames) => link.onFrames(frames),
        (code) => link.onError(code),
      );
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'VMNET_FAILURE';
      throw new UplinkError(flag, (err as Error).message, code);
    }
    return link;
  }

  describe(): Record<string, string | number> {
    const info = this.vmnet.info();
    const out: Record<string, string | number> = { vmnet: this.options.mode, mac: info.mac, mtu: info.mtu };
    if (this.options.sharedInterface !== undefined) out['bridge'] = this.options.sharedInterface;
    if (info.startAddress !== undefined) out['start_address'] = info.startAddress;
    if (info.endAddress !== undefined) out['end_address'] = info.endAddress;
    if (info.subnetMask !== undefined) out['subnet_mask'] = info.subnetMask;
    return out;
  }

  start(handler: FrameBatchHandler): void {
    if (!this.closed) this.handler = handler;
  }

  send(frame: Uint8Array): boolean {
    if (this.closed || !this.vmnet.write(frame)) {
      this.stats.txDropped++;
      return false;
    }
    this.stats.txFrames++;
    this.stats.txBytes += frame.length;
    return true;
  }

  flush(): void {}

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.handler = undefined;
    this.vmnet.close();
  }

  private onFrames(frames: Buffer[]): void {
    if (this.handler === undefined) return;
    const ok: Uint8Array[] = [];
    for (const f of frames) {
      if (f.length < 14) {
        this.stats.rxErrors++;
        continue;
      }
      this.stats.rxFrames++;
      this.stats.rxBytes += f.length;
      ok.push(f);
    }
    if (ok.length > 0) this.handler(ok);
  }

  private onError(code: string): void {
    this.linkOptions.onError?.(new LinkError('ELINK_FAILED', `vmnet link failed: ${code}`, { errno: code }));
  }
}
