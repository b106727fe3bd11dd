/**
 * The flow table: every NAT flow of every protocol in one place (as passt's flow table).
 *
 * Theory of operation. A flow has a type (tcp, udp, icmp), a network, and two sides: the guest's
 * (address, port — for ICMP echo the identifier) and the remote one as the guest addressed it
 * (address, port; 0 for ICMP), plus where the host side goes (`hostAddress`), its byte counts
 * and its lifecycle (`state`, opened, last active). Each protocol's NAT machine keeps its own
 * flow objects and lifecycle (TCP's connection states, UDP's and ICMP's idle LRU) and files them
 * here through a typed `FlowIndex` of its type; the table answers for all of them: one count
 * under one limit for the guests' own flows (`guestLimit`, below the descriptor limit; forwarded
 * flows have their budget in the TCP NAT), one listing for the API's `/flows`, and one way to end
 * flows a new filter rule set blocks.
 *
 * Keys: per index, network → guest side → remote side, each a `Map`, so a lookup is three map
 * reads and never a scan. A side's key is `address * 65536 + port` for IPv4 (exact in a double)
 * and `"address|port"` for IPv6 (`"2001:db8::1|443"`, the address in canonical text), so both
 * families live in the same indexes, the same count and limit, and the same `/flows`. The
 * network number lets two isolated networks both have a 10.0.2.15 (today every guest is on
 * network 0).
 */
import { formatIp, formatIpPort, type IpAddr } from '../stack/wire/addr.ts';

export type FlowProto = 'tcp' | 'udp' | 'icmp';

/**
 * May a guest open this flow (out of its network)? The engine answers from the filter rules
 * (`--filter`); on no, the NAT refuses as the guest's stack expects (RST, or ICMP
 * "administratively prohibited") and counts it.
 */
export type FlowAdmission = (proto: FlowProto, guestIp: IpAddr, guestPort: number, dstIp: IpAddr, dstPort: number) => boolean;
export type SideKey = number | string;

/** What every flow shows, whatever its protocol. */
export interface FlowEntry {
  readonly proto: FlowProto;
  readonly net: number;
  readonly guestIp: IpAddr;
  /** The guest's port (TCP, UDP) or echo identifier (ICMP). */
  readonly guestPort: number;
  /** The remote address as the guest addressed it. */
  readonly dstIp: IpAddr;
  /** The remote port (0 for ICMP). */
  readonly dstPort: number;
  /** Where the host side goes: the policy's answer (127.0.0.1 for the gateway), or 'dns'. */
  readonly hostAddress: string;
  readonly bytesFromGuest: number;
  readonly bytesToGuest: number;
  readonly openedAt: number;
  readonly lastActive: number;
  /** The lifecycle state as a word (TCP's state; 'active' for datagram flows). */
  readonly stateName: string;
  /** The port forward that opened it, if any. */
  readonly forward?: string | undefined;
  /** A guest forward's host socket as text (`unix:/PATH`, `tcp:HOST:PORT`), if it is one. */
  readonly hostShown?: string | undefined;
  /**
   * The ends of the host socket that carries the flow (`ip:port` each), while it has a connected
   * one of its own (TCP): what `ss -tnp` lists for vmnat's process.
   */
  hostSocketEnds?(): { local: string; peer: string } | undefined;
}

/** One flow as the API lists it. */
export interface FlowListing {
  proto: FlowProto;
  guest: string;
  remote: string;
  host: string;
  /** The host socket's own end, when `hostSocketEnds` knows it. */
  host_local?: string;
  state: string;
  forward?: string;
  bytes_from_guest: number;
  bytes_to_guest: number;
  age_s: number;
  idle_s: number;
}

/** A side's key: `address * 65536 + port` for IPv4 (a number), `"address|port"` for IPv6. */
export function sideKey(ip: IpAddr, port: number): SideKey {
  return typeof ip === 'string' ? `${ip}|${port}` : ip * 65536 + port;
}

/** The flows of one protocol, typed, in the shared table. */
export class FlowIndex<F extends FlowEntry> {
  private readonly byNet = new Map<number, Map<SideKey, Map<SideKey, F>>>();
  private n = 0;
  /** How the owning NAT ends one of its flows (both sides), for `FlowTable.closeWhere`. */
  closer: ((f: F) => void) | undefined;

  constructor(
    readonly proto: FlowProto,
    private readonly table: FlowTable,
  ) {}

  get size(): number {
    return this.n;
  }

  get(net: number, guest: SideKey, remote: SideKey): F | undefined {
    return this.byNet.get(net)?.get(guest)?.get(remote);
  }

  /** All flows of one guest side (e.g. to find a free ephemeral port for a forward). */
  ofGuest(net: number, guest: SideKey): ReadonlyMap<SideKey, F> | undefined {
    return this.byNet.get(net)?.get(guest);
  }

  add(f: F, guest: SideKey, remote: SideKey): void {
    let perNet = this.byNet.get(f.net);
    if (perNet === undefined) {
      perNet = new Map();
      this.byNet.set(f.net, perNet);
    }
    let perGuest = perNet.get(guest);
    if (perGuest === undefined) {
      perGuest = new Map();
      perNet.set(guest, perGuest);
    }
    if (!perGuest.has(remote)) {
      this.n++;
      this.table.count++;
      if (f.forward !== undefined) this.table.forwardCount++;
    }
    perGuest.set(remote, f);
  }

  delete(f: F, guest: SideKey, remote: SideKey): void {
    const perNet = this.byNet.get(f.net);
    const perGuest = perNet?.get(guest);
    if (perGuest === undefined || perGuest.get(remote) !== f) return;
    perGuest.delete(remote);
    this.n--;
    this.table.count--;
    if (f.forward !== undefined) this.table.forwardCount--;
    if (perGuest.size === 0) perNet!.delete(guest);
    if (perNet!.size === 0) this.byNet.delete(f.net);
  }

  *values(): IterableIterator<F> {
    for (const perNet of this.byNet.values()) for (const perGuest of perNet.values()) yield* perGuest.values();
  }
}

export class FlowTable {
  /** Flows of every protocol. */
  count = 0;
  /** Of those, flows a port forward opened into a guest (they have a budget of their own). */
  forwardCount = 0;
  /**
   * The most flows the guests may open, all protocols together (`--max-flows`): each holds a host
   * descriptor, so the default keeps the sum below the process's descriptor limit.
   */
  guestLimit = Infinity;

  /** The guests' own flows fill their budget: a new one is refused (or, UDP/ICMP, evicts). */
  get guestFull(): boolean {
    return this.count - this.forwardCount >= this.guestLimit;
  }
  private readonly indexes: FlowIndex<FlowEntry>[] = [];

  index<F extends FlowEntry>(proto: FlowProto): FlowIndex<F> {
    const idx = new FlowIndex<F>(proto, this);
    this.indexes.push(idx as unknown as FlowIndex<FlowEntry>);
    return idx;
  }

  /** Every flow, for the API (addresses as text, times in whole seconds). */
  list(now: number): FlowListing[] {
    const out: FlowListing[] = [];
    for (const idx of this.indexes) {
      for (const f of idx.values()) {
        const ipPort = (ip: IpAddr, p: number) => (f.proto === 'icmp' ? `${formatIp(ip)}:id ${p}` : formatIpPort(ip, p));
        const ends = f.hostSocketEnds?.();
        // Without a live socket only the host side's address is known; for a forward, dstPort is
        // vmnat's own port toward the guest, not the host client's, so it is left out.
        const hostAddr = f.hostAddress.includes(':') ? `[${f.hostAddress}]` : f.hostAddress;
        const host = ends?.peer ?? f.hostShown ?? (f.proto === 'icmp' || f.forward !== undefined ? f.hostAddress : `${hostAddr}:${f.dstPort}`);
        const item: FlowListing = {
          proto: f.proto,
          guest: ipPort(f.guestIp, f.guestPort),
          remote: f.proto === 'icmp' ? formatIp(f.dstIp) : formatIpPort(f.dstIp, f.dstPort),
          host,
          state: f.stateName,
          bytes_from_guest: f.bytesFromGuest,
          bytes_to_guest: f.bytesToGuest,
          age_s: Math.round((now - f.openedAt) / 1000),
          idle_s: Math.round((now - f.lastActive) / 1000),
        };
        if (f.forward !== undefined) item.forward = f.forward;
        if (ends !== undefined) item.host_local = ends.local;
        out.push(item);
      }
    }
    return out;
  }

  /**
   * Ends every flow `doomed` picks (a filter rule set that now blocks it), each the way its own
   * NAT ends flows; returns how many.
   */
  closeWhere(doomed: (f: FlowEntry) => boolean): number {
    let n = 0;
    for (const idx of this.indexes) {
      const close = idx.closer;
      if (close === undefined) continue;
      for (const f of [...idx.values()]) {
        if (!doomed(f)) continue;
        close(f);
        n++;
      }
    }
    return n;
  }

  /** Flows per protocol and in all, for the stats. */
  counts(): Record<string, number> {
    const out: Record<string, number> = { total: this.count, forwarded: this.forwardCount };
    for (const idx of this.indexes) out[idx.proto] = idx.size;
    return out;
  }
}
