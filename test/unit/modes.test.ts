/**
 * Modes without a network: the flags (and vmnet-helper's names for them, on Linux and macOS),
 * the switch's uplink port and the pulled cable, DHCP snooping, the engine's DHCP in host mode,
 * and the macOS vmnet link against a stand-in for the addon's `Vmnet` (the real one exists only
 * in a macOS build, which cannot run here).
 */
import { describe, expect, test } from 'vitest';
import { ConfigError, parseArgs, type Config } from '../../src/config.ts';
import { Switch, type SwitchConfig } from '../../src/switch/switch.ts';
import { DhcpSnoop } from '../../src/modes/snoop.ts';
import { VmnetLink } from '../../src/modes/vmnet-link.ts';
import { UplinkError } from '../../src/modes/uplink.ts';
import { loadNative, type NativeAddon, type NativeVmnetOptions } from '../../src/link/native.ts';
import { MemoryLink } from '../helpers/memorylink.ts';
import { eth, ipv4, udp } from '../helpers/fuzzframes.ts';

function cfg(args: string[], platform: NodeJS.Platform = 'linux'): Config {
  const o = parseArgs(['--socket', '/tmp/vmnat-modes-unit.sock', ...args], platform);
  if (o.action !== 'run') throw new Error('not run');
  return o.config;
}

function flagError(args: string[], platform: NodeJS.Platform = 'linux'): string {
  try {
    cfg(args, platform);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error('no error');
}

describe('mode flags', () => {
  test('nat by default; host mode takes VirtualBox\'s host-only layout', () => {
    expect(cfg([]).mode).toEqual({ kind: 'nat' });
    const c = cfg(['--mode', 'host']);
    expect(c.mode).toEqual({ kind: 'host', hostIf: 'vmnat0', hostIp: 0xc0a8_3801, prefixLen: 24, dhcpServer: 0xc0a8_3864 });
    expect([c.network, c.netmask, c.gateway, c.dns, c.firstLease, c.lastLease]).toEqual([0xc0a8_3800, 0xffff_ff00, 0xc0a8_3864, 0xc0a8_3864, 0xc0a8_3865, 0xc0a8_38fe]);
    const d = cfg(['--mode', 'host', '--host-ip', '10.50.0.1/16', '--host-if', 'hostnet0']);
    expect(d.mode).toMatchObject({ hostIf: 'hostnet0', prefixLen: 16 });
    expect([d.firstLease, d.lastLease]).toEqual([0x0a32_0065, 0x0a32_fffe]);
  });

  test('vmnet-helper\'s names: --operation-mode, --shared-interface, --start-address/--subnet-mask/--end-address, --enable-isolation', () => {
    expect(cfg(['--operation-mode', 'shared']).mode).toEqual({ kind: 'nat' });
    expect(cfg(['--operation-mode', 'bridged', '--shared-interface', 'br5']).mode).toEqual({ kind: 'bridged', bridge: 'br5' });
    const h = cfg(['--operation-mode', 'host', '--start-address', '192.168.105.1', '--subnet-mask', '255.255.255.0', '--end-address', '192.168.105.120', '--enable-isolation']);
    expect(h.mode).toMatchObject({ kind: 'host', hostIp: 0xc0a8_6901, prefixLen: 24 });
    expect(h.lastLease).toBe(0xc0a8_6978);
    expect(h.isolate).toBe(true);
  });

  test('macOS: host and bridged go through vmnet, with its options', () => {
    const h = cfg(['--mode', 'host', '--start-address', '192.168.105.1', '--subnet-mask', '255.255.255.0', '--end-address', '192.168.105.254', '--interface-id', '8A4B2C1E-0D3F-4E5A-9B6C-7D8E9F0A1B2C', '--enable-isolation'], 'darwin');
    expect(h.mode).toMatchObject({ kind: 'host', vmnet: { startAddress: '192.168.105.1', subnetMask: '255.255.255.0', endAddress: '192.168.105.254', interfaceId: '8a4b2c1e-0d3f-4e5a-9b6c-7d8e9f0a1b2c', isolation: true } });
    expect(cfg(['--mode', 'bridged', '--bridge', 'en0'], 'darwin').mode).toEqual({ kind: 'bridged', bridge: 'en0', vmnet: { isolation: false } });
  });

  test('one line naming the flag for each mistake', () => {
    expect(flagError(['--mode', 'shared'])).toBe('--mode: "shared" is not one of nat|host|bridged|disconnected');
    expect(flagError(['--operation-mode', 'nat'])).toBe('--operation-mode: "nat" is not one of host|bridged|shared');
    expect(flagError(['--mode', 'host', '--operation-mode', 'host'])).toMatch(/^--operation-mode: is another name for --mode/);
    expect(flagError(['--bridge', 'br0'])).toBe('--bridge: only applies with --mode bridged (this is --mode nat)');
    expect(flagError(['--mode', 'bridged', '--bridge', 'this-name-is-too-long'])).toMatch(/^--bridge: "this-name-is-too-long" is not a valid interface name/);
    expect(flagError(['--mode', 'host', '--net', '10.1.0.0/24'])).toBe("--net: configures vmnat's NAT, gateway or DNS, which --mode host turns off");
    expect(flagError(['--mode', 'host', '--host-ip', '192.168.56.100/24'])).toMatch(/^--host-ip: 192\.168\.56\.100 is where vmnat's DHCP server sits/);
    expect(flagError(['--mode', 'host', '--host-ip', '192.168.56.0/24'])).toMatch(/is the network address/);
    expect(flagError(['--mode', 'host', '--host-ip', 'nope'])).toMatch(/^--host-ip: "nope" is not an address with its prefix/);
    expect(flagError(['--mode', 'host', '--start-address', '192.168.5.1', '--subnet-mask', '255.0.255.0'])).toMatch(/^--subnet-mask: "255\.0\.255\.0" is not a subnet mask/);
    expect(flagError(['--mode', 'host', '--end-address', '192.168.56.50'])).toMatch(/^--end-address: "192\.168\.56\.50" is not an address of 192\.168\.56\.0\/24 from 192\.168\.56\.101 on/);
    expect(flagError(['--mode', 'host', '--dhcp-static', '52:54:00:00:00:01=192.168.56.1'])).toBe("--dhcp-static: 192.168.56.1 is the host's address (--host-ip)");
  });
});

// ---- the switch's uplink ----------------------------------------------------------------------

const BCAST = [255, 255, 255, 255, 255, 255];
const macOf = (n: number) => [0x52, 0x54, 0, 0, 0, n];
const ipOf = (n: number) => [192, 168, 56, n];
const ipNum = (n: number) => (0xc0a8_3800 | n) >>> 0;
const frame = (srcMac: number[], dstMac: number[], srcIp: number[], dstIp: number[]) => eth(dstMac, srcMac, 0x0800, ipv4(17, srcIp, dstIp, udp(srcIp, dstIp, 1000, 2000, new Uint8Array(8))));

function uplinkSwitch(isolate: boolean) {
  const c: SwitchConfig = { network: ipNum(0), netmask: 0xffff_ff00, reserved: [ipNum(100), ipNum(1)], ownMacs: [0x5255_c0a8_3864], isolate, antiSpoof: true, maxMacs: 64, macAgeMs: 300_000 };
  const toStack: Uint8Array[] = [];
  const sw = new Switch(c, (f) => toStack.push(f.slice()));
  const links = [new MemoryLink(), new MemoryLink(), new MemoryLink('tap')];
  const a = sw.attach(links[0]!);
  const b = sw.attach(links[1]!);
  const up = sw.attach(links[2]!, { uplink: true });
  return { sw, toStack, links, a, b, up };
}

describe('the uplink port', () => {
  test('isolation cuts guests from each other, never from the uplink; its broadcasts reach every guest', () => {
    const { sw, links, a, b, up } = uplinkSwitch(true);
    sw.input(b, frame(macOf(102), BCAST, ipOf(102), [255, 255, 255, 255]), 0); // b learned; broadcast to the uplink only
    expect(links.map((l) => l.sent.length)).toEqual([0, 0, 1]);
    sw.input(up, frame(macOf(1), BCAST, ipOf(1), [255, 255, 255, 255]), 1);
    expect(links.map((l) => l.sent.length)).toEqual([1, 1, 1]);
    sw.input(a, frame(macOf(101), macOf(102), ipOf(101), ipOf(102)), 2);
    expect(a.stats.drops.isolated).toBe(1);
    sw.input(a, frame(macOf(101), macOf(1), ipOf(101), ipOf(1)), 3);
    sw.input(up, frame(macOf(1), macOf(101), ipOf(1), ipOf(101)), 4);
    expect(links.map((l) => l.sent.length)).toEqual([2, 1, 2]);
    expect(sw.stats.toUplink).toBe(1); // a's unicast; broadcasts are counted as such
  });

  test('the uplink is trusted (no anti-spoofing); a guest may not claim the host\'s address; unknown unicast goes up, never down', () => {
    const { sw, toStack, links, a, up } = uplinkSwitch(false);
    sw.input(up, frame(macOf(7), macOf(101), [10, 9, 8, 7], ipOf(101)), 0); // any source from the LAN side
    expect(up.stats.drops.ipSpoof).toBe(0);
    expect(sw.stats.uplinkUnknownDropped).toBe(1); // guest 101 has not been seen yet
    sw.input(a, frame(macOf(101), macOf(55), ipOf(1), ipOf(55)), 1); // the host's address
    expect(a.stats.drops.ipSpoof).toBe(1);
    sw.input(a, frame(macOf(101), macOf(55), ipOf(101), ipOf(55)), 2); // unknown MAC 55: to the uplink
    expect(links[2]!.sent.length).toBe(1);
    sw.input(up, frame(macOf(7), macOf(66), [10, 9, 8, 7], ipOf(66)), 3); // unknown from the uplink: dropped
    expect(sw.stats.uplinkUnknownDropped).toBe(2);
    expect(toStack.length).toBe(0);
  });

  test('disconnected: every frame either way is dropped and counted, until connected again', () => {
    const { sw, links, a, b } = uplinkSwitch(false);
    sw.input(b, frame(macOf(102), BCAST, ipOf(102), [255, 255, 255, 255]), 0);
    sw.connected = false;
    sw.input(a, frame(macOf(101), macOf(102), ipOf(101), ipOf(102)), 1);
    sw.output(eth(macOf(102), [0x52, 0x55, 0xc0, 0xa8, 0x38, 0x64], 0x0800, new Uint8Array(40)), 2);
    expect(a.stats.drops.disconnected).toBe(1);
    expect(sw.stats.disconnectedToGuests).toBe(1);
    const before = links[1]!.sent.length;
    sw.connected = true;
    sw.input(a, frame(macOf(101), macOf(102), ipOf(101), ipOf(102)), 3);
    expect(links[1]!.sent.length).toBe(before + 1);
  });
});

// ---- DHCP snooping ----------------------------------------------------------------------------

/** A DHCP reply frame from a LAN server to `chaddr`: type 5 (ACK) or 6 (NAK). */
function dhcpReply(type: number, chaddr: number[], yiaddr: number[], leaseSec?: number): Uint8Array {
  const msg = new Uint8Array(300);
  msg[0] = 2; // BOOTREPLY
  msg[1] = 1;
  msg[2] = 6;
  msg.set(yiaddr, 16);
  msg.set(chaddr, 28);
  msg.set([0x63, 0x82, 0x53, 0x63], 236);
  let o = 240;
  msg.set([53, 1, type], o);
  o += 3;
  if (leaseSec !== undefined) {
    msg.set([51, 4, (leaseSec >>> 24) & 255, (leaseSec >>> 16) & 255, (leaseSec >>> 8) & 255, leaseSec & 255], o);
    o += 6;
  }
  msg[o] = 255;
  const server = [192, 168, 77, 1];
  return eth(chaddr, macOf(1), 0x0800, ipv4(17, server, yiaddr, udp(server, yiaddr, 67, 68, msg)));
}

describe('DHCP snooping', () => {
  test('an ACK binds, a NAK unbinds, an expired lease unbinds; malformed replies are counted', () => {
    const log: string[] = [];
    const snoop = new DhcpSnoop({ bind: (mac, ip) => log.push(`bind ${mac.toString(16)} ${ip.toString(16)}`), unbind: (mac, ip) => log.push(`unbind ${mac.toString(16)} ${ip.toString(16)}`) });
    snoop.inspect(dhcpReply(5, macOf(9), [192, 168, 77, 50], 60), 1000);
    expect(log).toEqual(['bind 525400000009 c0a84d32']);
    expect(snoop.nextDeadline()).toBe(61_000);
    snoop.inspect(dhcpReply(5, macOf(9), [192, 168, 77, 51], 60), 2000); // a new address: the old one goes
    expect(log.slice(1)).toEqual(['unbind 525400000009 c0a84d32', 'bind 525400000009 c0a84d33']);
    snoop.inspect(dhcpReply(6, macOf(9), [0, 0, 0, 0]), 3000);
    expect(log[3]).toBe('unbind 525400000009 c0a84d33');
    snoop.inspect(dhcpReply(5, macOf(10), [192, 168, 77, 52], 10), 4000);
    snoop.poll(13_999);
    expect(log.length).toBe(5);
    snoop.poll(14_000);
    expect(log[5]).toBe('unbind 52540000000a c0a84d34');
    const bad = dhcpReply(5, macOf(11), [192, 168, 77, 53], 10);
    bad[14 + 20 + 8 + 236] = 0; // broken magic cookie
    snoop.inspect(bad, 5000);
    expect(snoop.stats).toMatchObject({ acks: 3, naks: 1, expired: 1, bad: 1 });
  });
});

// ---- macOS vmnet (the TypeScript side) --------------------------------------------------------

describe('the addon\'s side of the modes', () => {
  test('Linux: the host-side ioctls name what is missing; the portable build (macOS\'s path) has them as ENOTSUP', () => {
    const native = loadNative();
    let caught: NodeJS.ErrnoException | undefined;
    try {
      native.ifAddToBridge('vmnat-nodev0', 'vmnat-nobr0');
    } catch (err) {
      caught = err as NodeJS.ErrnoException;
    }
    expect(caught?.code).toBe(native.build.flavor === 'linux' ? 'ENODEV' : 'ENOTSUP');
    expect(() => native.ifSetIpv4('vmnat-nodev0', 0x0a000001, 24)).toThrow(native.build.flavor === 'linux' ? /ENODEV|EPERM/ : /ENOTSUP/);
  });
});

describe('vmnet link (macOS; here against a stand-in for the addon)', () => {
  test('this build has no Vmnet: host and bridged on vmnet are refused with one line', () => {
    const native = loadNative();
    expect(native.Vmnet).toBeUndefined();
    expect(() => VmnetLink.open({ mode: 'host' }, {}, native)).toThrow(UplinkError);
    expect(() => VmnetLink.open({ mode: 'bridged', sharedInterface: 'en0' }, {}, native)).toThrow(/^--bridge: vmnet is macOS-only/);
  });

  test('frames in as one batch, frames out one vmnet_write each; start errors name the privilege vmnet needs', async () => {
    const written: Uint8Array[] = [];
    let deliver: ((frames: Buffer[]) => void) | undefined;
    let options: NativeVmnetOptions | undefined;
    class FakeVmnet {
      constructor(o: NativeVmnetOptions, onFrames: (frames: Buffer[]) => void) {
        if (o.interfaceId === 'deny') throw Object.assign(new Error('VMNET_INVALID_ACCESS: vmnet_start_interface failed (vmnet needs root, or the com.apple.vm.networking entitlement: run vmnat with sudo)'), { code: 'VMNET_INVALID_ACCESS' });
        options = o;
        deliver = onFrames;
      }
      info() {
        return { mac: '5a:94:ef:e4:0c:ee', mtu: 1500, maxPacketSize: 1514, startAddress: '192.168.105.1', endAddress: '192.168.105.254', subnetMask: '255.255.255.0' };
      }
      write(f: Uint8Array) {
        written.push(f.slice());
        return true;
      }
      close() {}
    }
    const native = { ...loadNative(), Vmnet: FakeVmnet } as unknown as NativeAddon;
    const link = VmnetLink.open({ mode: 'host', isolation: true }, {}, native);
    expect(options).toEqual({ mode: 'host', isolation: true });
    expect(link.describe()).toEqual({ vmnet: 'host', mac: '5a:94:ef:e4:0c:ee', mtu: 1500, start_address: '192.168.105.1', end_address: '192.168.105.254', subnet_mask: '255.255.255.0' });
    const got: number[] = [];
    link.start((frames) => got.push(frames.length));
    deliver!([Buffer.alloc(60), Buffer.alloc(3), Buffer.alloc(42)]);
    expect(got).toEqual([2]);
    expect(link.stats).toMatchObject({ rxFrames: 2, rxErrors: 1 });
    expect(link.send(new Uint8Array(42))).toBe(true);
    expect(written.length).toBe(1);
    await link.close();
    expect(link.send(new Uint8Array(42))).toBe(false);
    expect(() => VmnetLink.open({ mode: 'host', interfaceId: 'deny' }, {}, native)).toThrow(/^--mode: VMNET_INVALID_ACCESS: .*needs root, or the com\.apple\.vm\.networking entitlement/);
  });
});
