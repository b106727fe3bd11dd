/**
 * Frames captured from the real Linux kernel (Debian 12 host kernel), for the wire view tests.
 *
 * How they were made: two network namespaces joined by a veth pair, A = 10.99.0.1
 * (02:00:00:00:00:01), B = 10.99.0.2 (02:00:00:00:00:02), MTU 1500, tx/rx checksum offload turned
 * off on both ends (ETHTOOL_STXCSUM/SRXCSUM ioctls; otherwise veth carries partial checksums), and
 * `tcpdump -i va -w` in A while A ran: `busybox ping -c1` (ARP + echo), a python TCP client to a
 * python listener on B:8080 ("hello\n" / "world\n"), a connect to closed B:8081 (RST), `busybox
 * nslookup example.com 10.99.0.2` (DNS query → ICMP port unreachable), a UDP socket with
 * IP_OPTIONS = record route (→ an ICMP error whose outer header also carries the option, filled by
 * B), and a 4000-byte UDP datagram with PMTU discovery off (→ 3 fragments). The namespaces were
 * deleted afterwards. Frames are exact, byte for byte, with no FCS and no padding (veth pads
 * nothing: the ARP frames are 42 bytes).
 *
 * The three fragments are stored as their captured headers plus the payload pattern the sender
 * used (byte i of the UDP payload = (7i + 3) mod 256); `udpFragmentFrames()` rebuilds them and was
 * checked equal to the capture. The kernel's UDP checksum over the reassembled datagram proves it.
 */

export function hex(text: string): Uint8Array {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

export const MAC_A = 0x02_00_00_00_00_01;
export const MAC_B = 0x02_00_00_00_00_02;
export const IP_A = 0x0a_63_00_01; // 10.99.0.1
export const IP_B = 0x0a_63_00_02; // 10.99.0.2

export const ARP_REQUEST = hex(
  'ffffffffffff020000000001080600010800060400010200000000010a6300010000000000000a630002',
);

export const ARP_REPLY = hex(
  '020000000001020000000002080600010800060400020200000000020a6300020200000000010a630001',
);

export const ICMP_ECHO_REQUEST = hex(
  '020000000002020000000001080045000054853340004001a0ad0a6300010a63000208005bdd15880000ab8cdb0d0000' +
  '000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000' +
  '0000',
);

export const ICMP_ECHO_REPLY = hex(
  '020000000001020000000002080045000054b17b00004001b4650a6300020a630001000063dd15880000ab8cdb0d0000' +
  '000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000' +
  '0000',
);

export const TCP_SYN = hex(
  '02000000000202000000000108004500003ce0034000400645f00a6300010a630002acc21f90108868e000000000a002' +
  'faf030a10000020405b40402080ac9b7f82f000000000103030a',
);

export const TCP_SYN_ACK = hex(
  '02000000000102000000000208004500003c00004000400625f40a6300020a6300011f90acc2c01f74a4108868e1a012' +
  'fe88d7bd0000020405b40402080ad38b4ceac9b7f82f0103030a',
);

export const TCP_ACK = hex(
  '020000000002020000000001080045000034e0044000400645f70a6300010a630002acc21f90108868e1c01f74a58010' +
  '003f04d700000101080ac9b7f82fd38b4cea',
);

export const TCP_DATA = hex(
  '02000000000202000000000108004500003ae0054000400645f00a6300010a630002acc21f90108868e1c01f74a58018' +
  '003fc0ec00000101080ac9b7f82fd38b4cea68656c6c6f0a',
);

export const TCP_RST_ACK = hex(
  '02000000000102000000000208004500002800004000400626080a6300020a6300011f91d262000000009de0e6f35014' +
  '000024400000',
);

export const UDP_DNS_QUERY = hex(
  '020000000002020000000001080045000039f1f64000401133f50a6300010a630002c431003500258916cdf001000001' +
  '000000000000076578616d706c6503636f6d0000010001',
);

export const ICMP_PORT_UNREACH = hex(
  '020000000001020000000002080045c00055b1c300004001b35c0a6300020a630001030311fc0000000045000039f1f6' +
  '4000401133f50a6300010a630002c431003500258916cdf001000001000000000000076578616d706c6503636f6d0000' +
  '010001',
);

export const UDP_IP_OPTIONS = hex(
  '0200000000020200000000010800480000300ca340004011a33c0a6300010a630002070b080a63000100000000008e09' +
  '270f00106f836f7074696f6e7321',
);

export const ICMP_PORT_UNREACH_IP_OPTIONS = hex(
  '020000000001020000000002080048c00058b1ca00004001d4320a6300020a630001070b0c0a6300010a630002000303' +
  'a8dc00000000480000300ca340004011a33c0a6300010a630002070b0c0a6300010a630002008e09270f00106f836f70' +
  '74696f6e7321',
);

/** UDP payload of the fragmented datagram: 4000 bytes, byte i = (7i + 3) mod 256. */
export const FRAG_UDP_PAYLOAD_LEN = 4000;
export function fragPayloadByte(i: number): number {
  return (i * 7 + 3) & 0xff;
}

/** Captured headers of the three fragments: Ethernet + IPv4 (+ UDP in the first). */
const FRAG_HEADERS = [
  '0200000000020200000000010800450005dc0cec20004011335d0a6300010a630002c6ac1b580fa84777',
  '0200000000020200000000010800450005dc0cec20b9401132a40a6300010a630002',
  '02000000000202000000000108004500042c0cec01724011539b0a6300010a630002',
] as const;
/** UDP payload range carried by each fragment (the first also carries the 8-byte UDP header). */
const FRAG_RANGES = [
  [0, 1472],
  [1472, 2952],
  [2952, 4000],
] as const;

/** The three captured fragment frames, in the order the kernel sent them. */
export function udpFragmentFrames(): Uint8Array[] {
  return FRAG_HEADERS.map((h, k) => {
    const head = hex(h);
    const [from, to] = FRAG_RANGES[k]!;
    const frame = new Uint8Array(head.length + (to - from));
    frame.set(head, 0);
    for (let i = from; i < to; i++) frame[head.length + i - from] = fragPayloadByte(i);
    return frame;
  });
}

/**
 * A proxy of `buf` that throws on any indexed read outside [lo, hi): wraps the bytes given to a
 * view's `checked()` so a test fails if any getter reads past the range it was given.
 */
export function guarded(buf: Uint8Array, lo: number, hi: number): Uint8Array {
  return new Proxy(buf, {
    get(target, prop) {
      if (typeof prop === 'string' && /^\d+$/.test(prop)) {
        const i = Number(prop);
        if (i < lo || i >= hi) throw new Error(`out-of-range read at ${i}, allowed [${lo}, ${hi})`);
        return target[i];
      }
      return Reflect.get(target, prop, target) as unknown;
    },
  });
}

/** `len` bytes filled with 0xa5, the "unwritten" marker for emit tests. */
export function a5(len: number): Uint8Array {
  return new Uint8Array(len).fill(0xa5);
}
