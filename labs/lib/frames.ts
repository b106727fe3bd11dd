/**
 * Explains a capture frame by frame, from tcpdump's own decoding (`tcpdump -nn -e -v -r FILE`).
 *
 * Theory of operation: the capture lab wants the reader to see tcpdump's words and, under each
 * frame, what it means in this setup (who sent it and why). tcpdump already decodes every field, so
 * this module does not parse packets: it splits tcpdump's text into frames (a frame starts with
 * its timestamp at column 0; continuation lines are indented) and classifies each by patterns of
 * tcpdump's output — ARP request/reply, DHCP message type (option 53), TCP flags per connection
 * (the first pure ACK from the SYN's sender after the SYN-ACK completes the handshake), DNS, ICMP,
 * IPv6. Which side is which comes from the addresses of vmnat's layout: 10.0.2.2 is the gateway
 * (vmnat's TCP speaks for it), 10.0.2.3 the DNS forwarder. A frame it cannot classify is kind
 * `unknown`, which the lab treats as a failed check rather than guess.
 */

export interface TcpdumpFrame {
  /** 1-based position in the file. */
  index: number;
  /** tcpdump's lines for this frame (first line: timestamp, MACs, ethertype). */
  text: string;
  /** The timestamp in seconds: since the epoch with `tcpdump -tt`, else since midnight. */
  time: number;
}

export type FrameKind =
  | 'arp-request' | 'arp-reply'
  | 'dhcp-discover' | 'dhcp-offer' | 'dhcp-request' | 'dhcp-ack' | 'dhcp-nak' | 'dhcp-other'
  | 'tcp-syn' | 'tcp-syn-ack' | 'tcp-handshake-ack' | 'tcp-data' | 'tcp-ack' | 'tcp-fin' | 'tcp-rst'
  | 'dns-query' | 'dns-answer' | 'udp' | 'icmp' | 'ipv6'
  | 'unknown';

export interface ExplainedFrame {
  index: number;
  kind: FrameKind;
  /** The frame's tcpdump line without timestamp and MACs (`IP 10.0.2.15.33954 > …`), or its first line. */
  summary: string;
  meaning: string;
}

/** tcpdump's default `HH:MM:SS.uuuuuu`, or `-tt`'s seconds since the epoch (which survives midnight). */
const TIME_RE = /^(?:(\d{2}):(\d{2}):(\d{2}\.\d+)|(\d{9,}\.\d+)) /;

/** Splits `tcpdump -v` output into frames (skipping the "reading from file" line on stderr, if merged). */
export function splitTcpdump(out: string): TcpdumpFrame[] {
  const frames: TcpdumpFrame[] = [];
  for (const line of out.split('\n')) {
    const m = TIME_RE.exec(line);
    if (m) {
      const time = m[4] !== undefined ? Number(m[4]) : Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]);
      frames.push({ index: frames.length + 1, text: line, time });
    }
    else if (frames.length > 0 && /^\s/.test(line)) frames[frames.length - 1]!.text += `\n${line}`;
  }
  return frames;
}

/** Which end an address is, in words. */
function who(addr: string): string {
  if (addr === '10.0.2.2') return 'vmnat (as the gateway 10.0.2.2)';
  if (addr === '10.0.2.3') return 'vmnat (as the DNS server 10.0.2.3)';
  if (addr === '10.0.2.15') return 'the guest';
  if (addr === '0.0.0.0') return 'the guest (no address yet)';
  return addr;
}

function field(text: string, re: RegExp): string | undefined {
  return re.exec(text)?.[1];
}

/** `a.b.c.d.port` → [ip, port]. */
function splitEnd(end: string): [string, string] {
  const at = end.lastIndexOf('.');
  return [end.slice(0, at), end.slice(at + 1)];
}

/** Explains every frame; TCP needs the frames before it (handshake state per connection). */
/**
 * An IPv6 frame, from tcpdump's one-line decode: the Neighbor Discovery and router messages that
 * set up the guest's IPv6 side (the ipv6 lab goes through them), or IPv6 traffic in general.
 */
function explainIpv6(index: number, first: string): ExplainedFrame {
  const e = (summary: string, meaning: string): ExplainedFrame => ({ index, kind: 'ipv6', summary, meaning });
  const ends = /\) (\S+) > (\S+?): /.exec(first);
  const src = ends?.[1] ?? '?';
  const dst = ends?.[2] ?? '?';
  const msg = /ICMP6, ([a-z ]+?)(?:,|$| v2)/.exec(first)?.[1];
  const summary = `IPv6 ${src} > ${dst}${msg !== undefined ? `: ${msg}` : ''}`;
  if (msg === 'multicast listener report') {
    return e(summary, "the guest's kernel announces the multicast groups it listens to (MLD), e.g. its solicited-node group; switches use this, vmnat needs nothing from it.");
  }
  if (msg === 'router solicitation') return e(summary, 'the guest asks for a router (RS); vmnat answers with a router advertisement.');
  if (msg === 'router advertisement') {
    return e(summary, "vmnat (fe80::2) advertises itself as the IPv6 router: the prefix for SLAAC, the MTU, and ::3 as DNS server (RDNSS); the guest's kernel forms its own address from it.");
  }
  if (msg === 'neighbor solicitation') {
    const target = /who has (\S+?)(?:,|$)/.exec(first)?.[1] ?? '?';
    return e(`${summary} who has ${target}`, src === '::'
      ? `duplicate address detection: before using ${target} the guest asks whether anyone has it; nobody answers (vmnat never claims a guest's address), so it is free.`
      : `IPv6's ARP: which MAC has ${target}? (vmnat answers for its own addresses).`);
  }
  if (msg === 'neighbor advertisement') return e(summary, `the answer to a neighbour solicitation: ${src} is at the MAC this frame comes from.`);
  if (msg === 'echo request' || msg === 'echo reply') return e(summary, `ping over IPv6 (${msg}).`);
  return e(summary, "IPv6 traffic: vmnat's network is dual-stack (see the ipv6 lab).");
}

export function explainCapture(frames: readonly TcpdumpFrame[]): ExplainedFrame[] {
  /** Per connection (`a > b` sorted): who sent the SYN, and whether the SYN-ACK was seen. */
  const conns = new Map<string, { synFrom: string; synAck: boolean; done: boolean }>();
  return frames.map((f): ExplainedFrame => {
    const lines = f.text.split('\n');
    const first = lines[0]!;
    const l2 = (lines[1] ?? '').trim();
    const e = (kind: FrameKind, summary: string, meaning: string): ExplainedFrame => ({ index: f.index, kind, summary, meaning });

    if (first.includes('ethertype ARP')) {
      const summary = first.slice(first.indexOf('ethertype ARP'));
      const req = /Request who-has ([\d.]+) tell ([\d.]+)/.exec(first);
      if (req) return e('arp-request', `ARP, Request who-has ${req[1]} tell ${req[2]}`, `${who(req[2]!)} asks, by broadcast, which MAC has ${req[1]}: it must know before it can send IP packets there.`);
      const rep = /Reply ([\d.]+) is-at ([0-9a-f:]+)/.exec(first);
      if (rep) {
        const isVmnat = rep[1] === '10.0.2.2' || rep[1] === '10.0.2.3';
        return e('arp-reply', `ARP, Reply ${rep[1]} is-at ${rep[2]}`, isVmnat
          ? `vmnat answers for ${rep[1]} with its own MAC ${rep[2]}: every virtual address of the network (gateway, DNS) lives in vmnat.`
          : `${who(rep[1]!)} answers: ${rep[1]} is at ${rep[2]}.`);
      }
      return e('unknown', summary, 'an ARP frame of another kind');
    }
    if (first.includes('ethertype IPv6')) return explainIpv6(f.index, first);
    if (!first.includes('ethertype IPv4')) return e('unknown', first, 'not IPv4, IPv6 or ARP');

    const ends = /^(\S+) > (\S+?):/.exec(l2);
    if (!ends) return e('unknown', l2, 'an IPv4 frame tcpdump did not decode as expected');
    const [srcIp, srcPort] = splitEnd(ends[1]!);
    const [dstIp, dstPort] = splitEnd(ends[2]!);
    const summary = `IP ${l2.replace(/, cksum 0x[0-9a-f]+ \([^)]*\)/g, '')}`;

    const dhcp = field(f.text, /DHCP-Message \(53\), length 1: (\w+)/);
    if (dhcp !== undefined) {
      const yourIp = field(f.text, /Your-IP (\S+)/);
      const server = field(f.text, /Server-ID \(54\), length 4: (\S+)/);
      const lease = field(f.text, /Lease-Time \(51\), length 4: (\d+)/);
      const router = field(f.text, /Default-Gateway \(3\), length 4: (\S+)/);
      const dns = field(f.text, /Domain-Name-Server \(6\), length \d+: (\S+)/);
      const mask = field(f.text, /Subnet-Mask \(1\), length 4: (\S+)/);
      const xid = field(f.text, /xid (0x[0-9a-f]+)/);
      const s = `BOOTP/DHCP ${dhcp}${yourIp !== undefined ? ` Your-IP ${yourIp}` : ''} (${ends[1]} > ${ends[2]}, xid ${xid ?? '?'})`;
      switch (dhcp) {
        case 'Discover':
          return e('dhcp-discover', s, `DISCOVER: the guest has no address (source 0.0.0.0) and broadcasts to 255.255.255.255: "is there a DHCP server?". The xid ties the four messages together.`);
        case 'Offer':
          return e('dhcp-offer', s, `OFFER: vmnat's DHCP server (Server-ID ${server ?? '?'}) offers ${yourIp ?? '?'}, mask ${mask ?? '?'}, router ${router ?? '?'}, DNS ${dns ?? '?'}, lease ${lease ?? '?'} s.`);
        case 'Request':
          return e('dhcp-request', s, `REQUEST: the guest asks for the offered address from server ${server ?? '?'}; still broadcast, so any other server would learn its offer was not taken.`);
        case 'ACK':
          return e('dhcp-ack', s, `ACK: vmnat confirms the lease of ${yourIp ?? '?'} for ${lease ?? '?'} s. Only now does the guest put the address on eth0.`);
        case 'NAK':
          return e('dhcp-nak', s, 'NAK: the server refuses the requested address; the guest starts over with a DISCOVER.');
        default:
          return e('dhcp-other', s, `DHCP ${dhcp}.`);
      }
    }

    const flags = field(l2, /Flags \[([^\]]*)\]/);
    if (flags !== undefined) {
      const len = Number(field(l2, /length (\d+)$/) ?? field(l2, /length (\d+)/) ?? '0');
      const key = [ends[1], ends[2]].sort().join(' ');
      const from = who(srcIp);
      const to = `${dstIp}:${dstPort}`;
      if (flags === 'S') {
        conns.set(key, { synFrom: ends[1]!, synAck: false, done: false });
        return e('tcp-syn', summary, srcIp === '10.0.2.15'
          ? `SYN: the guest opens a connection to ${to}. vmnat now dials 127.0.0.1:${dstPort} on the host${dstIp === '10.0.2.2' ? ' (10.0.2.2 is the host\'s loopback)' : ''} and answers only when that connect succeeded.`
          : `SYN: ${from} opens a connection to the guest's port ${dstPort} (a port forward).`);
      }
      if (flags === 'S.') {
        const c = conns.get(key);
        if (c !== undefined) c.synAck = true;
        return e('tcp-syn-ack', summary, srcIp === '10.0.2.15'
          ? `SYN-ACK: the guest accepts the connection on port ${srcPort}.`
          : `SYN-ACK: the host's connect succeeded, so vmnat's own TCP answers for ${srcIp}:${srcPort}. The host's kernel never sees this segment.`);
      }
      if (flags.includes('R')) return e('tcp-rst', summary, `RST: ${from} aborts the connection.`);
      if (flags.includes('F')) {
        return e('tcp-fin', summary, srcIp === '10.0.2.15'
          ? 'FIN: the guest closes its side; vmnat shuts down the host socket\'s sending side in turn.'
          : `FIN: the host's server closed its side of the socket; vmnat passes that on as a FIN${len > 0 ? `, with the last ${len} bytes` : ''}.`);
      }
      const c = conns.get(key);
      if (flags === '.' && len === 0 && c !== undefined && c.synAck && !c.done && ends[1] === c.synFrom) {
        c.done = true;
        return e('tcp-handshake-ack', summary, 'ACK: the three-way handshake is complete; both sides may now send data.');
      }
      if (len > 0) {
        return e('tcp-data', summary, srcIp === '10.0.2.15'
          ? `${len} bytes from the guest (here the HTTP request); vmnat writes them to the host socket.`
          : `${len} bytes the host's server wrote, read by vmnat from its host socket and sent on to the guest as ${from}.`);
      }
      return e('tcp-ack', summary, `ACK from ${from}: acknowledges what it received (no data).`);
    }

    if (l2.includes('ICMP')) return e('icmp', summary, `ICMP from ${who(srcIp)}.`);
    if (dstPort === '53' || srcPort === '53') {
      return dstPort === '53'
        ? e('dns-query', summary, `a DNS query from the guest to ${who(dstIp)}; vmnat forwards it to its upstream server on the host.`)
        : e('dns-answer', summary, `the DNS answer, relayed by ${who(srcIp)}.`);
    }
    if (/ UDP\b|UDP,/.test(l2) || /proto UDP/.test(first)) return e('udp', summary, `a UDP datagram from ${who(srcIp)} to ${dstIp}:${dstPort}.`);
    return e('unknown', summary, 'an IPv4 frame of a kind this lab does not expect');
  });
}
