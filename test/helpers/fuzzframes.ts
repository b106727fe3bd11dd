/**
 * Seeded generator of hostile Ethernet frames for the bad-input test: valid frames of every kind
 * vmnat handles, then truncated, bit-flipped, with lying length fields, bad checksums, IP options,
 * overlapping and never-completed fragments, and pure noise; IPv6 too (NDP with bad options, RS,
 * echo, UDP to ::3, fragments, extension-header chains, SYNs, DHCPv6). Built independently of vmnat's own
 * wire writers so that a bug there cannot hide here.
 */

/** mulberry32: small, fast, seedable; a failure replays from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function csum(b: Uint8Array, off: number, len: number, init = 0): number {
  let s = init;
  for (let i = 0; i + 1 < len; i += 2) s += (b[off + i]! << 8) | b[off + i + 1]!;
  if (len & 1) s += b[off + len - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

export const GW_MAC = [0x52, 0x55, 10, 0, 2, 2];
export const GUEST_MAC = [0x52, 0x54, 0x00, 0xfe, 0xed, 0x01];

export function eth(dst: number[], src: number[], type: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + payload.length);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = type >> 8;
  f[13] = type & 0xff;
  f.set(payload, 14);
  return f;
}

export function ipv4(proto: number, src: number[], dst: number[], l4: Uint8Array, opts: { ident?: number; flagsFrag?: number; options?: Uint8Array; ttl?: number } = {}): Uint8Array {
  const optLen = opts.options?.length ?? 0;
  const hl = 20 + optLen;
  const p = new Uint8Array(hl + l4.length);
  p[0] = 0x40 | (hl / 4);
  p[2] = p.length >> 8;
  p[3] = p.length & 0xff;
  const ident = opts.ident ?? 0x1234;
  p[4] = ident >> 8;
  p[5] = ident & 0xff;
  const ff = opts.flagsFrag ?? 0x4000;
  p[6] = ff >> 8;
  p[7] = ff & 0xff;
  p[8] = opts.ttl ?? 64;
  p[9] = proto;
  p.set(src, 12);
  p.set(dst, 16);
  if (opts.options) p.set(opts.options, 20);
  const c = csum(p, 0, hl);
  p[10] = c >> 8;
  p[11] = c & 0xff;
  p.set(l4, hl);
  return p;
}

export function l4sum(proto: number, src: number[], dst: number[], seg: Uint8Array, at: number): void {
  const ph = new Uint8Array(12 + seg.length);
  ph.set(src, 0);
  ph.set(dst, 4);
  ph[9] = proto;
  ph[10] = seg.length >> 8;
  ph[11] = seg.length & 0xff;
  ph.set(seg, 12);
  const c = csum(ph, 0, ph.length) || 0xffff;
  seg[at] = c >> 8;
  seg[at + 1] = c & 0xff;
}

export function udp(src: number[], dst: number[], sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const u = new Uint8Array(8 + payload.length);
  u[0] = sport >> 8;
  u[1] = sport & 0xff;
  u[2] = dport >> 8;
  u[3] = dport & 0xff;
  u[4] = u.length >> 8;
  u[5] = u.length & 0xff;
  u.set(payload, 8);
  l4sum(17, src, dst, u, 6);
  return u;
}

function icmpEcho(id: number, seq: number, payload: Uint8Array): Uint8Array {
  const m = new Uint8Array(8 + payload.length);
  m[0] = 8;
  m[4] = id >> 8;
  m[5] = id & 0xff;
  m[6] = seq >> 8;
  m[7] = seq & 0xff;
  m.set(payload, 8);
  const c = csum(m, 0, m.length);
  m[2] = c >> 8;
  m[3] = c & 0xff;
  return m;
}

/** A TCP SYN with options; the checksum over an IPv4 pseudo-header of `src`, `dst` (IPv6 callers redo it). */
function tcpSyn(src: number[], dst: number[], sport: number, dport: number): Uint8Array {
  const t = new Uint8Array(40);
  t[0] = sport >> 8;
  t[1] = sport & 0xff;
  t[2] = dport >> 8;
  t[3] = dport & 0xff;
  t[7] = 1;
  t[12] = 10 << 4;
  t[13] = 0x02;
  t[14] = 0xfa;
  t[15] = 0xf0;
  t.set([2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7], 20);
  l4sum(6, src, dst, t, 16);
  return t;
}

export function dhcpDiscover(mac: number[], xid: number): Uint8Array {
  const d = new Uint8Array(300);
  d[0] = 1;
  d[1] = 1;
  d[2] = 6;
  d[4] = xid >>> 24;
  d[5] = (xid >>> 16) & 0xff;
  d[6] = (xid >>> 8) & 0xff;
  d[7] = xid & 0xff;
  d[10] = 0x80;
  d.set(mac, 28);
  d.set([99, 130, 83, 99, 53, 1, 1, 55, 4, 1, 3, 6, 15, 255], 236);
  return d;
}

const ARP_TYPE = 0x0806;
const IP_TYPE = 0x0800;
export const GUEST_IP = [10, 0, 2, 15];
export const GW_IP = [10, 0, 2, 2];

function arpRequest(srcMac: number[], srcIp: number[], target: number[]): Uint8Array {
  const a = new Uint8Array(28);
  a.set([0, 1, 8, 0, 6, 4, 0, 1], 0);
  a.set(srcMac, 8);
  a.set(srcIp, 14);
  a.set(target, 24);
  return a;
}

// ── IPv6 (vmnat's default prefix fd00:10:0:2::/64) ──

const IP6_TYPE = 0x86dd;
export const GUEST6 = [0xfd, 0, 0, 0x10, 0, 0, 0, 2, 0x50, 0x54, 0, 0xff, 0xfe, 0xfe, 0xed, 0x01];
export const GW6 = [0xfd, 0, 0, 0x10, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2];
export const DNS6 = [0xfd, 0, 0, 0x10, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3];
const UNSPEC6 = new Array<number>(16).fill(0);

/** An IPv6 packet: the fixed header, then `rest` (extension headers and the upper layer), first next header `next`. */
export function ipv6(next: number, src: number[], dst: number[], rest: Uint8Array, hopLimit = 64): Uint8Array {
  const p = new Uint8Array(40 + rest.length);
  p[0] = 0x60;
  p[4] = rest.length >> 8;
  p[5] = rest.length & 0xff;
  p[6] = next;
  p[7] = hopLimit;
  p.set(src, 8);
  p.set(dst, 24);
  p.set(rest, 40);
  return p;
}

/** Fills the checksum at `at` of an upper-layer message with the IPv6 pseudo-header (RFC 8200 §8.1). */
export function l4sum6(proto: number, src: number[], dst: number[], seg: Uint8Array, at: number): void {
  const ph = new Uint8Array(40 + seg.length);
  ph.set(src, 0);
  ph.set(dst, 16);
  ph[34] = seg.length >> 8;
  ph[35] = seg.length & 0xff;
  ph[39] = proto;
  ph.set(seg, 40);
  const c = csum(ph, 0, ph.length) || (proto === 17 ? 0xffff : 0);
  seg[at] = c >> 8;
  seg[at + 1] = c & 0xff;
}

function icmp6(type: number, code: number, src: number[], dst: number[], body: Uint8Array): Uint8Array {
  const m = new Uint8Array(4 + body.length);
  m[0] = type;
  m[1] = code;
  m.set(body, 4);
  l4sum6(58, src, dst, m, 2);
  return m;
}

/** A solicited-node multicast group (ff02::1:ffXX:XXXX) for `target`, and its MAC. */
function solicited(target: number[]): { ip: number[]; mac: number[] } {
  const ip = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, target[13]!, target[14]!, target[15]!];
  return { ip, mac: [0x33, 0x33, 0xff, target[13]!, target[14]!, target[15]!] };
}

/** Yields `count` hostile frames from `seed`. Also returns a tally of kinds for the test's log. */
export function* hostileFrames(seed: number, count: number): Generator<Uint8Array> {
  const r = prng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const bytes = (n: number) => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  const randMac = () => [int(256) & 0xfe, int(256), int(256), int(256), int(256), int(256)];
  const base6 = (): Uint8Array => {
    switch (int(8)) {
      case 0: {
        // NS for the gateway, with options that may be well-formed, zero-length or past the end.
        const g = solicited(GW6);
        const opts = int(3) === 0 ? new Uint8Array([1, int(3), ...GUEST_MAC]) : new Uint8Array([1, 1, ...GUEST_MAC]);
        return eth(g.mac, GUEST_MAC, IP6_TYPE, ipv6(58, int(4) ? GUEST6 : UNSPEC6, g.ip, icmp6(135, 0, int(4) ? GUEST6 : UNSPEC6, g.ip, new Uint8Array([0, 0, 0, 0, ...GW6, ...opts])), int(5) ? 255 : int(256)));
      }
      case 1: {
        const allRouters = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        return eth([0x33, 0x33, 0, 0, 0, 2], GUEST_MAC, IP6_TYPE, ipv6(58, GUEST6, allRouters, icmp6(133, 0, GUEST6, allRouters, new Uint8Array([0, 0, 0, 0, ...bytes(8 * int(3))])), 255));
      }
      case 2:
        return eth(GW_MAC, GUEST_MAC, IP6_TYPE, ipv6(58, GUEST6, GW6, icmp6(128, 0, GUEST6, GW6, new Uint8Array([int(256), int(256), 0, 1, ...bytes(int(200))]))));
      case 3: {
        const u = new Uint8Array(8 + 30);
        u[0] = 0xc0;
        u[3] = 53;
        u[5] = u.length;
        u.set(bytes(30), 8);
        l4sum6(17, GUEST6, DNS6, u, 6);
        return eth([0x52, 0x55, 10, 0, 2, 3], GUEST_MAC, IP6_TYPE, ipv6(17, GUEST6, DNS6, u));
      }
      case 4: {
        // One fragment (Fragment header) of a datagram that may never complete, or overlap.
        const frag = new Uint8Array(8 + 8 * (1 + int(40)));
        frag[0] = 17;
        const off = int(60) * 8;
        frag[2] = off >> 8;
        frag[3] = (off & 0xf8) | int(2);
        frag[7] = int(6);
        frag.set(bytes(frag.length - 8), 8);
        return eth(GW_MAC, GUEST_MAC, IP6_TYPE, ipv6(44, GUEST6, DNS6, frag));
      }
      case 5: {
        // A chain of extension headers (Hop-by-Hop, Destination options, Routing) of random lengths.
        const n = 1 + int(10);
        const parts: number[] = [];
        const kinds = [0, 60, 43, 60];
        const first = kinds[int(4)]!;
        for (let i = 0; i < n; i++) {
          const len = int(3);
          parts.push(i + 1 < n ? kinds[int(4)]! : 17, len, ...bytes(6 + len * 8));
        }
        return eth(GW_MAC, GUEST_MAC, IP6_TYPE, ipv6(first, GUEST6, GW6, new Uint8Array([...parts, ...bytes(int(40))])));
      }
      case 6: {
        const t = tcpSyn([], [], 1024 + int(60000), 1 + int(1023));
        t[16] = 0;
        t[17] = 0;
        l4sum6(6, GUEST6, GW6, t, 16);
        return eth(GW_MAC, GUEST_MAC, IP6_TYPE, ipv6(6, GUEST6, GW6, t));
      }
      default: {
        // A DHCPv6 SOLICIT (or noise) to ff02::1:2 from the guest's link-local address.
        const ll = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, ...GUEST6.slice(8)];
        const all = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2];
        const body = int(2) ? new Uint8Array([1, 1, 2, 3, 0, 1, 0, 10, 0, 3, 0, 1, ...GUEST_MAC, 0, 3, 0, 12, ...bytes(12)]) : bytes(int(100));
        const u = new Uint8Array(8 + body.length);
        u[1] = 546 & 0xff;
        u[0] = 546 >> 8;
        u[2] = 547 >> 8;
        u[3] = 547 & 0xff;
        u[4] = u.length >> 8;
        u[5] = u.length & 0xff;
        u.set(body, 8);
        l4sum6(17, ll, all, u, 6);
        return eth([0x33, 0x33, 0, 1, 0, 2], GUEST_MAC, IP6_TYPE, ipv6(17, ll, all, u, 1));
      }
    }
  };
  const base = (): Uint8Array => {
    if (int(4) === 0) return base6();
    switch (int(8)) {
      case 0:
        return eth([255, 255, 255, 255, 255, 255], GUEST_MAC, ARP_TYPE, arpRequest(GUEST_MAC, GUEST_IP, GW_IP));
      case 1:
        return eth(GW_MAC, GUEST_MAC, IP_TYPE, ipv4(1, GUEST_IP, GW_IP, icmpEcho(int(65536), int(65536), bytes(int(200)))));
      case 2:
        return eth([255, 255, 255, 255, 255, 255], GUEST_MAC, IP_TYPE, ipv4(17, [0, 0, 0, 0], [255, 255, 255, 255], udp([0, 0, 0, 0], [255, 255, 255, 255], 68, 67, dhcpDiscover(randMac(), int(2 ** 32)))));
      case 3:
        return eth(GW_MAC, GUEST_MAC, IP_TYPE, ipv4(6, GUEST_IP, GW_IP, tcpSyn(GUEST_IP, GW_IP, 1024 + int(60000), 1 + int(1023))));
      case 4: // IP options: record route, then NOPs and end
        return eth(GW_MAC, GUEST_MAC, IP_TYPE, ipv4(1, GUEST_IP, GW_IP, icmpEcho(1, 1, bytes(16)), { options: new Uint8Array([7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1]) }));
      case 5: {
        // One fragment of a datagram that never completes (distinct idents fill the reassembler).
        const off = int(100) * 8;
        const l4 = bytes(8 * (1 + int(50)));
        return eth(GW_MAC, GUEST_MAC, IP_TYPE, ipv4(17, GUEST_IP, GW_IP, l4, { ident: int(65536), flagsFrag: 0x2000 | (off / 8) }));
      }
      case 6: {
        // Overlapping fragment of a small set of idents.
        const off = int(20) * 8;
        return eth(GW_MAC, GUEST_MAC, IP_TYPE, ipv4(17, GUEST_IP, GW_IP, bytes(64), { ident: 7 + int(3), flagsFrag: (int(2) ? 0x2000 : 0) | (off / 8) }));
      }
      default:
        return eth(GW_MAC, randMac(), IP_TYPE, ipv4(17, [10, 0, 2, 16 + int(200)], GW_IP, udp([10, 0, 2, 16], GW_IP, int(65536), int(65536), bytes(int(100)))));
    }
  };
  for (let i = 0; i < count; i++) {
    const f = base();
    switch (int(7)) {
      case 0:
        yield f; // valid
        break;
      case 1:
        yield f.subarray(0, Math.max(14, int(f.length))); // truncated
        break;
      case 2: {
        // flip 1-4 random bytes anywhere past the MACs
        for (let k = 1 + int(4); k > 0; k--) {
          const at = 12 + int(f.length - 12);
          f[at] = f[at]! ^ (1 + int(255));
        }
        yield f;
        break;
      }
      case 3: {
        // lying length fields: IP total length / IHL / UDP length
        if (f[12] === 0x08 && f[13] === 0x00 && f.length >= 34) {
          const which = int(3);
          if (which === 0) {
            f[16] = int(256);
            f[17] = int(256);
          } else if (which === 1) f[14] = 0x40 | int(16);
          else if (f.length >= 40) {
            f[38] = int(256);
            f[39] = int(256);
          }
        }
        yield f;
        break;
      }
      case 4: {
        // bad checksum: IP header or L4
        if (f.length > 40) {
          const at = int(2) ? 24 : f.length - 1;
          f[at] = f[at]! ^ 0x5a;
        }
        yield f;
        break;
      }
      case 5:
        yield bytes(14 + int(200)); // noise
        break;
      default: {
        // valid headers with the EtherType or IP protocol changed to something unknown
        if (int(2)) {
          f[12] = int(256);
          f[13] = int(256);
        } else if (f.length > 23) f[23] = int(256);
        yield f;
      }
    }
  }
}
