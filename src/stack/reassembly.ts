/**
 * IPv4 fragment reassembly (RFC 791 §3.2, RFC 815 in spirit, RFC 5722 in spirit).
 *
 * Theory of operation: fragments of one datagram share (src, dst, protocol, ident). For each such
 * key a `Pending` record keeps copies of the fragment payloads (the link reuses frame buffers),
 * sorted by offset, plus the first fragment's header. Because overlaps are refused, the datagram
 * is complete exactly when the last fragment (MF = 0) has fixed its length and the bytes held
 * equal that length. Then one buffer is allocated: the first fragment's header (options included)
 * with MF and the offset cleared, total length and checksum fixed, then the payloads in order.
 *
 * Overlap: any fragment that overlaps one already held, other than an exact duplicate (same range,
 * same bytes: retransmissions happen), poisons the whole datagram (RFC 5722's rule for IPv6, which
 * we apply to IPv4 too: overlaps exist only to evade filters). The record stays as a tombstone
 * without data until its timeout, so the datagram's later fragments are discarded too. The same
 * happens when fragments disagree about the datagram's length.
 *
 * Limits, all bounded: at most `maxDatagrams` records (tombstones included) and `maxBytesTotal`
 * bytes charged (payload bytes + header + a fixed overhead per fragment, so 8-byte fragments
 * cannot pin more memory than their charge). When a new fragment does not fit, the oldest records
 * are evicted ('evicted'). Each datagram may grow to 65,535 bytes with its header; a fragment
 * reaching past that is refused ('tooBig': the ping of death). A record times out `timeoutMs`
 * after its first fragment arrived (RFC 791 and Linux do not restart the timer per fragment), so
 * records sit in a Map in deadline order: expiry and eviction both take from its front, O(1).
 *
 * Sans-I/O: time comes in as `now` (ms); `poll(now)` expires; `nextDeadline()` says when next.
 */

import { fillIpv4Checksum, IPV4_FRAG_OFFSET_MASK, IPV4_MAX_LEN, IPV4_MF, type Ipv4View } from './wire/ipv4.ts';
import { IPV6_FRAG_HLEN, IPV6_HLEN, type Ipv6View } from './wire/ipv6.ts';

/**
 * One fragment as the family-neutral core sees it: the datagram's key, the fragment's place, the
 * bytes of the header to keep (`buf[off, off+headerLen)`: the IPv4 header, or IPv6's unfragmentable
 * part) and of its data (`buf[dataOff, dataOff+len)`).
 */
interface FragmentIn {
  key: string;
  start: number;
  len: number;
  more: boolean;
  buf: Uint8Array;
  off: number;
  headerLen: number;
  dataOff: number;
}

export interface ReassemblyLimits {
  /** Datagrams being reassembled at once (tombstones included). Default 64. */
  maxDatagrams: number;
  /** Bytes charged for held fragments across all datagrams. Default 1 MiB. */
  maxBytesTotal: number;
  /** Time from a datagram's first fragment to giving up on it. Default 30 s. */
  timeoutMs: number;
}

export const DEFAULT_REASSEMBLY_LIMITS: Readonly<ReassemblyLimits> = {
  maxDatagrams: 64,
  maxBytesTotal: 1 << 20,
  timeoutMs: 30_000,
};

/** Bytes charged per held fragment beyond its payload: the object and array headers it costs. */
export const FRAGMENT_OVERHEAD = 128;
/** Bytes charged per datagram record. */
export const DATAGRAM_OVERHEAD = 256;

export function createReassemblyStats() {
  return {
    /** Fragments handed to `input`. */
    fragments: 0,
    /** Complete datagrams returned. */
    reassembled: 0,
    /** Exact duplicates of a held fragment, ignored. */
    duplicate: 0,
    /** Datagrams discarded because fragments overlapped. */
    overlap: 0,
    /** Datagrams discarded because fragments disagreed about the datagram's length. */
    inconsistent: 0,
    /** Fragments arriving for a discarded datagram (a tombstone), dropped. */
    discarded: 0,
    /** Fragments that would make the datagram larger than 65,535 bytes, dropped. */
    tooBig: 0,
    /** Fragments with MF set and a payload that is empty or not a multiple of 8, dropped. */
    badFragment: 0,
    /** Non-fragments handed to `input`, ignored. */
    notFragment: 0,
    /** Incomplete datagrams that timed out. */
    timeout: 0,
    /** Incomplete datagrams evicted to stay within the limits. */
    evicted: 0,
  };
}
export type ReassemblyStats = ReturnType<typeof createReassemblyStats>;

interface Fragment {
  start: number;
  end: number;
  data: Uint8Array;
}

interface Pending {
  readonly deadline: number;
  /** Sorted by start; never overlapping. */
  fragments: Fragment[];
  /** Header of the offset-0 fragment, once seen. */
  header: Uint8Array | undefined;
  /** Payload length, known once the MF = 0 fragment arrived. */
  totalPayload: number | undefined;
  payloadHeld: number;
  charged: number;
  /** Poisoned by an overlap or inconsistency: fragments are dropped until the deadline. */
  dead: boolean;
}

/** Called by `poll` for each expired datagram whose first fragment had arrived (for ICMP Time Exceeded). */
export type ReassemblyExpiredHandler = (firstFragmentHeader: Uint8Array, firstPayloadBytes: Uint8Array) => void;

/**
 * The reassembly core for both families (below: `Ipv4Reassembler`, `Ipv6Reassembler`). IPv6
 * (RFC 8200 §4.5) shares the rules: overlaps poison the datagram (RFC 5722), the same limits and
 * counters, 65,535 bytes of payload at most; its header kept is the unfragmentable part, and the
 * Fragment header is left out of the datagram returned.
 */
abstract class Reassembler {
  readonly limits: Readonly<ReassemblyLimits>;
  private readonly pending = new Map<string, Pending>();
  private bytesCharged = 0;

  constructor(
    limits: Partial<ReassemblyLimits> = {},
    readonly stats: ReassemblyStats = createReassemblyStats(),
  ) {
    this.limits = { ...DEFAULT_REASSEMBLY_LIMITS, ...limits };
  }

  /** Datagrams held (tombstones included). */
  get size(): number {
    return this.pending.size;
  }

  /** Bytes currently charged against `maxBytesTotal`. */
  get bytesHeld(): number {
    return this.bytesCharged;
  }

  /**
   * Takes one fragment (a checked view; its bytes are copied, the frame may be reused). Returns the
   * complete datagram, newly allocated, when this fragment completes it; otherwise undefined.
   */
  protected abstract readonly maxHeaderAndPayload: number;
  protected abstract finish(header: Uint8Array, frags: readonly Fragment[], payloadLen: number): Uint8Array | undefined;

  protected inputFragment(ip: FragmentIn, now: number): Uint8Array | undefined {
    this.stats.fragments++;
    const start = ip.start;
    const len = ip.len;
    const end = start + len;
    const more = ip.more;
    if (more && (len === 0 || (len & 7) !== 0)) {
      this.stats.badFragment++;
      return undefined;
    }
    if (ip.headerLen + end > this.maxHeaderAndPayload) {
      this.stats.tooBig++;
      return undefined;
    }

    const key = ip.key;
    let p = this.pending.get(key);
    if (p !== undefined && p.deadline <= now) {
      // Expired but not yet polled: this fragment starts a new datagram.
      this.expire(key, p, undefined);
      p = undefined;
    }
    if (p === undefined) {
      p = {
        deadline: now + this.limits.timeoutMs,
        fragments: [],
        header: undefined,
        totalPayload: undefined,
        payloadHeld: 0,
        charged: DATAGRAM_OVERHEAD,
        dead: false,
      };
      if (!this.makeRoom(DATAGRAM_OVERHEAD, 1, undefined)) {
        this.stats.evicted++; // only with limits too small for a single record
        return undefined;
      }
      this.pending.set(key, p);
      this.bytesCharged += DATAGRAM_OVERHEAD;
    }
    if (p.dead) {
      this.stats.discarded++;
      return undefined;
    }

    // Length agreement: the last fragment fixes the length; nothing may reach past it.
    if (!more) {
      if ((p.totalPayload !== undefined && p.totalPayload !== end) || end < this.heldEnd(p)) {
        this.poison(p, 'inconsistent');
        return undefined;
      }
    } else if (p.totalPayload !== undefined && end > p.totalPayload) {
      this.poison(p, 'inconsistent');
      return undefined;
    }

    // Insertion point: the number of held fragments starting before `end` (binary search, so a
    // flood of tiny fragments in reverse order costs O(log n) per fragment, not O(n)).
    const frags = p.fragments;
    let lo = 0;
    let hi = frags.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (frags[mid]!.start < end) lo = mid + 1;
      else hi = mid;
    }
    const idx = lo;
    // Held fragments never overlap, so frags[idx-1] (the last starting before `end`) has the
    // greatest end among them: it is the only one that can reach past `start`.
    const prev = idx > 0 ? frags[idx - 1] : undefined;
    if (prev !== undefined && prev.end > start) {
      if (prev.start === start && prev.end === end && sameBytes(prev.data, ip.buf, ip.dataOff)) {
        this.stats.duplicate++;
        return undefined;
      }
      this.poison(p, 'overlap');
      return undefined;
    }

    const cost = len + FRAGMENT_OVERHEAD + (start === 0 ? ip.headerLen : 0);
    if (!this.makeRoom(cost, 0, p)) {
      // Even with every other datagram evicted this one does not fit: give it up.
      this.remove(key, p);
      this.stats.evicted++;
      return undefined;
    }
    const data = ip.buf.slice(ip.dataOff, ip.dataOff + len);
    frags.splice(idx, 0, { start, end, data });
    p.payloadHeld += len;
    p.charged += cost;
    this.bytesCharged += cost;
    if (start === 0) p.header = ip.buf.slice(ip.off, ip.off + ip.headerLen);
    if (!more) p.totalPayload = end;

    if (p.totalPayload === undefined || p.payloadHeld !== p.totalPayload || p.header === undefined) return undefined;
    const out = this.finish(p.header, frags, p.totalPayload);
    this.remove(key, p);
    if (out !== undefined) this.stats.reassembled++;
    return out;
  }

  /**
   * Expires datagrams whose deadline is at or before `now`. `onExpired`, if given, receives the
   * first fragment's header and its first 8 payload bytes (the quote for ICMP Time Exceeded, code
   * 1, which RFC 792 sends only when fragment zero arrived).
   */
  poll(now: number, onExpired?: ReassemblyExpiredHandler): void {
    for (const [key, p] of this.pending) {
      if (p.deadline > now) break; // deadline order
      this.expire(key, p, onExpired);
    }
  }

  /** The earliest deadline of a held datagram, or undefined when none is held. */
  nextDeadline(): number | undefined {
    for (const p of this.pending.values()) return p.deadline;
    return undefined;
  }

  private expire(key: string, p: Pending, onExpired: ReassemblyExpiredHandler | undefined): void {
    if (!p.dead) {
      this.stats.timeout++;
      const first = p.fragments[0];
      if (onExpired !== undefined && p.header !== undefined && first !== undefined && first.start === 0) {
        onExpired(p.header, first.data.subarray(0, 8));
      }
    }
    this.remove(key, p);
  }

  /** Highest end offset held (0 if none). */
  private heldEnd(p: Pending): number {
    const last = p.fragments[p.fragments.length - 1];
    return last === undefined ? 0 : last.end;
  }

  /** Drops a datagram's data but keeps its record until the deadline, so its later fragments die too. */
  private poison(p: Pending, reason: 'overlap' | 'inconsistent'): void {
    this.stats[reason]++;
    p.dead = true;
    p.fragments = [];
    p.header = undefined;
    this.bytesCharged -= p.charged - DATAGRAM_OVERHEAD;
    p.charged = DATAGRAM_OVERHEAD;
  }

  private remove(key: string, p: Pending): void {
    this.pending.delete(key);
    this.bytesCharged -= p.charged;
  }

  /**
   * Evicts the oldest datagrams (never `keep`) until `bytes` more and `records` more fit. Returns
   * false if they cannot fit even then.
   */
  private makeRoom(bytes: number, records: number, keep: Pending | undefined): boolean {
    const { maxBytesTotal, maxDatagrams } = this.limits;
    if (this.bytesCharged + bytes <= maxBytesTotal && this.pending.size + records <= maxDatagrams) return true;
    for (const [key, p] of this.pending) {
      if (this.bytesCharged + bytes <= maxBytesTotal && this.pending.size + records <= maxDatagrams) break;
      if (p === keep) continue;
      this.remove(key, p);
      if (!p.dead) this.stats.evicted++;
    }
    return this.bytesCharged + bytes <= maxBytesTotal && this.pending.size + records <= maxDatagrams;
  }

  protected tooBig(): undefined {
    this.stats.tooBig++;
    return undefined;
  }
}

/** IPv4 reassembly (RFC 791 §3.2): see the module comment. */
export class Ipv4Reassembler extends Reassembler {
  protected readonly maxHeaderAndPayload = IPV4_MAX_LEN;

  /**
   * Takes one fragment (a checked view; its bytes are copied, the frame may be reused). Returns the
   * complete datagram, newly allocated, when this fragment completes it; otherwise undefined.
   */
  input(ip: Ipv4View, now: number): Uint8Array | undefined {
    if (!ip.isFragment) {
      this.stats.notFragment++;
      return undefined;
    }
    return this.inputFragment(
      {
        key: `${ip.src}/${ip.dst}/${ip.protocol}/${ip.ident}`,
        start: ip.fragmentOffset,
        len: ip.payloadLen,
        more: ip.moreFragments,
        buf: ip.buf,
        off: ip.off,
        headerLen: ip.headerLen,
        dataOff: ip.payloadOff,
      },
      now,
    );
  }

  protected finish(header: Uint8Array, frags: readonly Fragment[], payloadLen: number): Uint8Array | undefined {
    const hl = header.length;
    const total = hl + payloadLen;
    if (total > IPV4_MAX_LEN) {
      // Only reachable if a later fragment had a shorter header than the first.
      this.stats.tooBig++;
      return undefined;
    }
    const out = new Uint8Array(total);
    out.set(header, 0);
    out[2] = total >>> 8;
    out[3] = total & 0xff;
    // Keep DF and the reserved bit; clear MF and the offset.
    const flags = ((out[6]! << 8) | out[7]!) & ~(IPV4_MF | IPV4_FRAG_OFFSET_MASK);
    out[6] = flags >>> 8;
    out[7] = flags & 0xff;
    for (const f of frags) out.set(f.data, hl + f.start);
    fillIpv4Checksum(out, 0);
    return out;
  }
}

/** IPv6 reassembly (RFC 8200 §4.5): the same core; the Fragment header is unlinked from the result. */
export class Ipv6Reassembler extends Reassembler {
  protected readonly maxHeaderAndPayload = IPV6_HLEN + 0xffff;
  private prevNextAt = 0;

  /** As `Ipv4Reassembler.input`: the whole packet (fixed header, payload length fixed) when complete. */
  input(ip: Ipv6View, now: number): Uint8Array | undefined {
    if (!ip.isFragment) {
      this.stats.notFragment++;
      return undefined;
    }
    const headerLen = ip.fragHeaderOff - ip.off;
    // Where, in the kept header, the Next Header byte naming the Fragment header is (a fixed
    // position for one datagram's fragments: their unfragmentable parts are the same).
    this.prevNextAt = ip.fragPrevNextOff - ip.off;
    const dataOff = ip.fragHeaderOff + IPV6_FRAG_HLEN;
    return this.inputFragment(
      {
        key: `${ip.src}/${ip.dst}/${ip.ident}`,
        start: ip.fragmentOffset,
        len: ip.off + ip.totalLen - dataOff,
        more: ip.moreFragments,
        buf: ip.buf,
        off: ip.off,
        headerLen: headerLen + IPV6_FRAG_HLEN, // kept with the first fragment: its next header
        dataOff,
      },
      now,
    );
  }

  protected finish(header: Uint8Array, frags: readonly Fragment[], payloadLen: number): Uint8Array | undefined {
    // `header` is the unfragmentable part followed by the first fragment's Fragment header.
    const hl = header.length - IPV6_FRAG_HLEN;
    if (hl - IPV6_HLEN + payloadLen > 0xffff) return this.tooBig();
    const out = new Uint8Array(hl + payloadLen);
    out.set(header.subarray(0, hl), 0);
    const plen = hl - IPV6_HLEN + payloadLen;
    out[4] = plen >>> 8;
    out[5] = plen & 0xff;
    const at = this.prevNextAt;
    if (at >= 0 && at < hl) out[at] = header[hl]!; // the Fragment header's Next Header
    for (const f of frags) out.set(f.data, hl + f.start);
    return out;
  }
}

function sameBytes(a: Uint8Array, buf: Uint8Array, off: number): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== buf[off + i]) return false;
  return true;
}
