/**
 * Neighbour table: which MAC holds which guest IPv4 address.
 *
 * Theory of operation: entries are learned from what guests send (ARP sender fields, the source
 * of IPv4 packets from inside the subnet) and from DHCP leases; they are never probed for, since
 * every guest talks first. The table is bounded: when full, the least recently refreshed entry is
 * evicted (a Map keeps insertion order, so delete-then-set moves an entry to the back).
 */
import type { Ipv4Addr, MacAddr } from './wire/addr.ts';

export interface NeighbourEntry {
  mac: MacAddr;
  updatedAt: number;
}

export class NeighbourTable {
  private readonly entries = new Map<Ipv4Addr, NeighbourEntry>();

  constructor(private readonly capacity = 4096) {}

  learn(ip: Ipv4Addr, mac: MacAddr, now: number): void {
    const old = this.entries.get(ip);
    if (old !== undefined) {
      if (old.mac === mac && now - old.updatedAt < 1000) return; // hot path: fresh and unchanged
      this.entries.delete(ip);
    } else if (this.entries.size >= this.capacity) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(ip, { mac, updatedAt: now });
  }

  lookup(ip: Ipv4Addr): MacAddr | undefined {
    return this.entries.get(ip)?.mac;
  }

  get size(): number {
    return this.entries.size;
  }

  *[Symbol.iterator](): IterableIterator<[Ipv4Addr, NeighbourEntry]> {
    yield* this.entries;
  }
}
