/**
 * Networking modes: what sits behind vmnat's switch besides the guests.
 *
 * Theory of operation. vmnat's switch (switch/switch.ts) is the same in every mode: guests are
 * ports, anti-spoofing, isolation and filter rules apply per port. The mode decides what else is
 * on it:
 *   nat           vmnat's own stack: gateway, DNS, DHCP, the NAT to the host's sockets (default).
 *   host          (Linux) a TAP in vmnat's namespace, `--host-if` (vmnat0), carrying `--host-ip`
 *                 (192.168.56.1/24): the host's kernel is a port of the switch, so it answers ARP
 *                 for that address and talks to the guests directly (VirtualBox's vboxnet0). vmnat
 *                 serves DHCP from .100 with leases from .101 (VirtualBox's layout), gives no
 *                 router and no DNS, and routes nothing: the NAT, the gateway and DNS are off, and
 *                 a frame a guest sends to vmnat's MAC for any other address is dropped
 *                 (`ipv4.noRoute`).
 *   bridged       (Linux) a TAP enslaved to an existing Linux bridge (`--bridge BR`): the LAN is a
 *                 port of the switch. vmnat's stack, DHCP and NAT are off; guests lease from the
 *                 LAN's DHCP server, and vmnat snoops those ACKs (snoop.ts) so anti-spoofing binds
 *                 each guest port to its lease as with vmnat's own DHCP.
 *   disconnected  the cable pulled: links stay up, every frame either way is dropped and counted.
 *                 It is a state over a configured mode (`--mode disconnected` is nat, started
 *                 disconnected); the API (PUT /mode) switches between the two.
 * macOS has no TAP devices or bridges: there host and bridged go through vmnet.framework
 * (vmnet-link.ts; untested), whose own DHCP serves host mode, so vmnat snoops there as in bridged.
 * The uplink (host TAP, bridge TAP or vmnet) is a trusted port: no anti-spoofing on it (the LAN's
 * many MACs come through it), isolation never cuts a guest from it, unknown unicast from a guest
 * goes to it (a learning switch floods to its uplink), and unknown unicast from it is dropped.
 *
 * This module holds the flags and their checks; config.ts turns a `ModeFlagError` into its
 * `ConfigError` (one line naming the flag, exit 2).
 */
import { formatIpv4, parseIpv4, prefixMask, type Ipv4Addr } from '../stack/wire/addr.ts';

/** A bad mode flag: `flag` names it (config.ts rethrows it as a ConfigError). */
export class ModeFlagError extends Error {
  constructor(
    readonly flag: string,
    readonly detail: string,
  ) {
    super(`${flag}: ${detail}`);
  }
}
const ConfigError = ModeFlagError;

export type ModeKind = 'nat' | 'host' | 'bridged';
/** What GET /mode and the ready line call the mode in force. */
export type ModeName = ModeKind | 'disconnected';

/** macOS: how vmnet is started (vmnet-helper's options). */
export interface VmnetOptions {
  startAddress?: string;
  endAddress?: string;
  subnetMask?: string;
  interfaceId?: string;
  isolation: boolean;
}

export type ModeConfig =
  | { kind: 'nat' }
  | {
      kind: 'host';
      /** Linux: the host-side TAP and its address. */
      hostIf: string;
      hostIp: Ipv4Addr;
      prefixLen: number;
      /** vmnat's DHCP server address (.100). */
      dhcpServer: Ipv4Addr;
      /** macOS: vmnet host mode instead of a TAP (its DHCP serves the guests). */
      vmnet?: VmnetOptions;
    }
  | {
      kind: 'bridged';
      /** Linux: the bridge; macOS: the physical interface vmnet bridges to. */
      bridge: string;
      vmnet?: VmnetOptions;
    };

export const MODE_VALUE_FLAGS = ['--mode', '--operation-mode', '--host-if', '--host-ip', '--bridge', '--shared-interface', '--start-address', '--end-address', '--subnet-mask', '--interface-id'] as const;
export const MODE_BOOLEAN_FLAGS = ['--enable-isolation'] as const;

export const MODE_USAGE = `Modes (what is behind the switch besides the guests):
  --mode MODE           nat (default): vmnat's gateway, DNS, DHCP and NAT
                        host: a host-only network; the host joins it through a TAP
                          (Linux) and vmnat serves DHCP (.100, leases from .101); no
                          gateway, no DNS, no route out
                        bridged: the guests join an existing Linux bridge (the LAN)
                          and lease from its DHCP server; vmnat's DHCP and NAT are off
                        disconnected: nat with the cable pulled (frames dropped and
                          counted) until the API connects it (vmnat ctl mode connected)
  --host-if NAME        host mode: the host-side TAP (default vmnat0; Linux)
  --host-ip CIDR        host mode: the host's address on it (default 192.168.56.1/24)
  --bridge NAME         bridged mode: the Linux bridge to join (macOS: the physical
                        interface vmnet bridges to, e.g. en0)
  vmnet-helper's names are accepted too: --operation-mode host|bridged|shared (shared =
  nat), --shared-interface NAME (= --bridge), --start-address IP and --subnet-mask
  MASK (= --host-ip), --end-address IP (the last lease), --enable-isolation
  (= --isolate); macOS only (vmnet, untested): --interface-id UUID (a stable MAC)
`;

/** Flags that configure vmnat's NAT, gateway or DNS: refused outside nat mode. */
const NAT_ONLY = ['--hostfwd', '--natpf', '--guestfwd', '--hostfwd-source', '--deny', '--allow-link-local', '--no-host-loopback', '--dns-server', '--dns-mode', '--dns-host', '--dns-hosts', '--host-alias', '--tftp', '--bootfile', '--tftp-server', '--domain', '--dns-search', '--net'];
/** Flags of vmnat's DHCP server: refused where the LAN's server leases (bridged). */
const DHCP_ONLY = ['--dhcp-static', '--dhcp-lease-time'];

export interface ParsedMode {
  mode: ModeConfig;
  /** --mode disconnected: the configured mode starts with the cable pulled. */
  startDisconnected: boolean;
  /** --enable-isolation given (the CLI ORs it into --isolate). */
  isolate: boolean;
}

/**
 * The mode flags. `values` holds every flag given (name → values in order), `platform` decides
 * between TAP/bridge (Linux) and vmnet (macOS).
 */
export function parseModeFlags(values: ReadonlyMap<string, readonly string[]>, platform: NodeJS.Platform): ParsedMode {
  const one = (flag: string): string | undefined => {
    const list = values.get(flag);
    if (list === undefined) return undefined;
    if (list.length > 1) throw new ConfigError(flag, 'given more than once');
    return list[0];
  };
  const modeFlag = values.has('--operation-mode') ? '--operation-mode' : '--mode';
  if (values.has('--mode') && values.has('--operation-mode')) throw new ConfigError('--operation-mode', 'is another name for --mode: give one of them');
  let text = one(modeFlag) ?? 'nat';
  if (modeFlag === '--operation-mode') {
    if (text === 'shared') text = 'nat';
    else if (text !== 'host' && text !== 'bridged') throw new ConfigError(modeFlag, `${JSON.stringify(text)} is not one of host|bridged|shared`);
  }
  if (text !== 'nat' && text !== 'host' && text !== 'bridged' && text !== 'disconnected') {
    throw new ConfigError(modeFlag, `${JSON.stringify(text)} is not one of nat|host|bridged|disconnected`);
  }
  const kind: ModeKind = text === 'disconnected' ? 'nat' : text;
  const only = (flags: readonly string[], where: string): void => {
    for (const f of flags) if (values.has(f)) throw new ConfigError(f, `only applies with --mode ${where} (this is --mode ${text})`);
  };
  if (kind !== 'host') only(['--host-if', '--host-ip', '--start-address', '--end-address', '--subnet-mask'], 'host');
  if (kind !== 'bridged') only(['--bridge', '--shared-interface'], 'bridged');
  if (kind !== 'nat') {
    for (const f of NAT_ONLY) {
      if (values.has(f)) throw new ConfigError(f, `configures vmnat's NAT, gateway or DNS, which --mode ${kind} turns off`);
    }
  }
  if (kind === 'bridged') {
    for (const f of DHCP_ONLY) if (values.has(f)) throw new ConfigError(f, `configures vmnat's DHCP server; in --mode bridged the guests lease from the LAN's`);
  }
  const mac = platform === 'darwin';
  if (!mac && values.has('--interface-id')) throw new ConfigError('--interface-id', 'is for macOS vmnet only (a TAP needs no interface id)');
  const isolate = values.has('--enable-isolation');
  if (kind === 'nat') {
    if (values.has('--interface-id')) throw new ConfigError('--interface-id', 'only applies with --mode host or bridged');
    return { mode: { kind: 'nat' }, startDisconnected: text === 'disconnected', isolate };
  }
  if (platform !== 'linux' && !mac) throw new ConfigError(modeFlag, `--mode ${kind} needs Linux (TAP) or macOS (vmnet)`);
  const interfaceId = one('--interface-id');
  if (interfaceId !== undefined && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(interfaceId)) {
    throw new ConfigError('--interface-id', `${JSON.stringify(interfaceId)} is not a UUID such as 8a4b2c1e-0d3f-4e5a-9b6c-7d8e9f0a1b2c`);
  }

  if (kind === 'bridged') {
    if (values.has('--bridge') && values.has('--shared-interface')) throw new ConfigError('--shared-interface', 'is another name for --bridge: give one of them');
    const flag = values.has('--bridge') ? '--bridge' : '--shared-interface';
    const bridge = one(flag);
    if (bridge === undefined) throw new ConfigError('--mode', `bridged needs --bridge NAME (${mac ? 'the physical interface, e.g. en0' : 'an existing Linux bridge, e.g. br0'})`);
    checkIfName(flag, bridge);
    const mode: ModeConfig = { kind: 'bridged', bridge };
    if (mac) mode.vmnet = vmnetOptions(interfaceId, isolate);
    return { mode, startDisconnected: false, isolate };
  }

  // host
  const hostIfText = one('--host-if') ?? 'vmnat0';
  checkIfName('--host-if', hostIfText);
  if (values.has('--host-ip') && (values.has('--start-address') || values.has('--subnet-mask'))) {
    throw new ConfigError('--start-address', 'and --subnet-mask are vmnet-helper\'s names for --host-ip: give one form');
  }
  let hostIp: Ipv4Addr;
  let prefixLen: number;
  let flag = '--host-ip';
  const start = one('--start-address');
  if (start !== undefined || values.has('--subnet-mask')) {
    flag = '--start-address';
    const ip = start === undefined ? undefined : parseIpv4(start);
    if (ip === undefined) throw new ConfigError('--start-address', `${JSON.stringify(start ?? '')} is not an IPv4 address (give it with --subnet-mask)`);
    const maskText = one('--subnet-mask') ?? '255.255.255.0';
    const mask = parseIpv4(maskText);
    const len = mask === undefined ? -1 : maskLength(mask);
    if (len < 0) throw new ConfigError('--subnet-mask', `${JSON.stringify(maskText)} is not a subnet mask such as 255.255.255.0`);
    hostIp = ip;
    prefixLen = len;
  } else {
    const cidr = one('--host-ip') ?? '192.168.56.1/24';
    const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(cidr);
    const ip = m ? parseIpv4(m[1]!) : undefined;
    if (!m || ip === undefined || Number(m[2]) > 32) throw new ConfigError('--host-ip', `${JSON.stringify(cidr)} is not an address with its prefix such as 192.168.56.1/24`);
    hostIp = ip;
    prefixLen = Number(m[2]);
  }
  const layout = hostLayout(hostIp, prefixLen);
  if (typeof layout === 'string') throw new ConfigError(flag, layout);
  const mode: ModeConfig = { kind: 'host', hostIf: hostIfText, hostIp, prefixLen, dhcpServer: layout.dhcpServer };
  if (mac) {
    const v = vmnetOptions(interfaceId, isolate);
    if (start !== undefined) {
      v.startAddress = formatIpv4(hostIp);
      v.subnetMask = formatIpv4(prefixMask(prefixLen));
    }
    const end = one('--end-address');
    if (end !== undefined) v.endAddress = end;
    mode.vmnet = v;
  }
  return { mode, startDisconnected: false, isolate };
}

function vmnetOptions(interfaceId: string | undefined, isolation: boolean): VmnetOptions {
  const v: VmnetOptions = { isolation };
  if (interfaceId !== undefined) v.interfaceId = interfaceId.toLowerCase();
  return v;
}

function checkIfName(flag: string, name: string): void {
  if (!/^[A-Za-z0-9_.:-]{1,15}$/.test(name)) throw new ConfigError(flag, `${JSON.stringify(name)} is not a valid interface name (1..15 characters)`);
}

/** The prefix length of a contiguous mask, or -1. */
function maskLength(mask: Ipv4Addr): number {
  for (let len = 0; len <= 32; len++) if (prefixMask(len) === mask >>> 0) return len;
  return -1;
}

export interface HostLayout {
  network: Ipv4Addr;
  netmask: Ipv4Addr;
  dhcpServer: Ipv4Addr;
  firstLease: Ipv4Addr;
  lastLease: Ipv4Addr;
}

/**
 * VirtualBox's host-only layout in the host's subnet: DHCP server at .100, leases from .101 to the
 * last address before broadcast. A message for the user when the subnet cannot hold it.
 */
export function hostLayout(hostIp: Ipv4Addr, prefixLen: number): HostLayout | string {
  if (prefixLen < 8 || prefixLen > 25) return `prefix /${prefixLen} is not in /8../25 (the layout puts vmnat's DHCP server at .100 and leases from .101)`;
  const netmask = prefixMask(prefixLen);
  const network = (hostIp & netmask) >>> 0;
  const broadcast = (network | ~netmask) >>> 0;
  if (hostIp === network || hostIp === broadcast) return `${formatIpv4(hostIp)} is the ${hostIp === network ? 'network' : 'broadcast'} address of ${formatIpv4(network)}/${prefixLen}`;
  const dhcpServer = network + 100;
  if (hostIp === dhcpServer) return `${formatIpv4(hostIp)} is where vmnat's DHCP server sits (.100): give the host another address`;
  return { network, netmask, dhcpServer, firstLease: network + 101, lastLease: broadcast - 1 };
}

/**
 * The mode's own fields, for the ready line and GET /config; `null` marks a field of the NAT
 * layout that means nothing in this mode (the ready line leaves those out).
 */
export function modeToApi(mode: ModeConfig): Record<string, unknown> {
  switch (mode.kind) {
    case 'nat':
      return {};
    case 'host': {
      // macOS: vmnet's DHCP serves the network it chose (or --start-address's); vmnat only snoops.
      if (mode.vmnet !== undefined) return { network: null, netmask: null, gateway: null, dns: null, guest_ip: null, first_lease: null, last_lease: null, gateway_mac: null, vmnet: { ...mode.vmnet } };
      const out: Record<string, unknown> = {
        gateway: null,
        dns: null,
        gateway_mac: null,
        host_ip: `${formatIpv4(mode.hostIp)}/${mode.prefixLen}`,
        dhcp_server: formatIpv4(mode.dhcpServer),
      };
      out['host_if'] = mode.hostIf;
      return out;
    }
    case 'bridged': {
      const out: Record<string, unknown> = { network: null, netmask: null, gateway: null, dns: null, guest_ip: null, first_lease: null, last_lease: null, gateway_mac: null, bridge: mode.bridge };
      if (mode.vmnet !== undefined) out['vmnet'] = { ...mode.vmnet };
      return out;
    }
  }
}
