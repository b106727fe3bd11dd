/**
 * A small authoritative DNS server for end-to-end tests, on a loopback address, over UDP and TCP
 * (dns-packet for the messages). Answers from a fixed zone; a UDP answer larger than the client's
 * limit (512, or its EDNS size) is sent truncated (TC) with no records, as real servers do.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket, { type Answer } from 'dns-packet';

export type Zone = Record<string, Answer[]>;

export interface TestDns {
  port: number;
  host: string;
  queries: { transport: 'udp' | 'tcp'; name: string; type: string }[];
  close(): Promise<void>;
}

export async function startTestDns(zone: Zone, host = '127.0.0.1'): Promise<TestDns> {
  const queries: TestDns['queries'] = [];
  const answer = (msg: Buffer, transport: 'udp' | 'tcp'): Buffer | undefined => {
    let q;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return undefined;
    }
    const question = q.questions?.[0];
    if (!question) return undefined;
    queries.push({ transport, name: question.name, type: question.type });
    const records = (zone[question.name.toLowerCase()] ?? []).filter((a) => a.type === question.type);
    const known = Object.keys(zone).includes(question.name.toLowerCase());
    const opt = q.additionals?.find((a) => a.type === 'OPT');
    const limit = opt && 'udpPayloadSize' in opt ? Math.max(512, opt.udpPayloadSize) : 512;
    const flags = dnsPacket.AUTHORITATIVE_ANSWER | (known ? 0 : 3); // NXDOMAIN for unknown names
    const full = dnsPacket.encode({ type: 'response', id: q.id, flags, questions: [question], answers: records });
    if (transport === 'udp' && full.length > limit) {
      return dnsPacket.encode({ type: 'response', id: q.id, flags: flags | dnsPacket.TRUNCATED_RESPONSE, questions: [question], answers: [] });
    }
    return full;
  };
  // UDP and TCP on one port: bind UDP to port 0, then TCP to the same number; if something else
  // holds that TCP port, start again with a new UDP port (never a port chosen and bound later).
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket('udp4');
    udp.on('message', (msg, rinfo) => {
      const out = answer(msg, 'udp');
      if (out) udp.send(out, rinfo.port, rinfo.address);
    });
    await new Promise<void>((r) => udp.bind(0, host, r));
    const port = udp.address().port;
    const tcp = net.createServer((sock) => {
      let buf = Buffer.alloc(0);
      sock.on('error', () => {});
      sock.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + msg.length);
          const out = answer(msg, 'tcp');
          if (out) {
            const len = Buffer.alloc(2);
            len.writeUInt16BE(out.length);
            sock.write(Buffer.concat([len, out]));
          }
        }
      });
    });
    const listened = await new Promise<Error | undefined>((r) => {
      tcp.once('error', r);
      tcp.listen(port, host, () => r(undefined));
    });
    if (listened !== undefined) {
      udp.close();
      if ((listened as NodeJS.ErrnoException).code === 'EADDRINUSE' && attempt < 50) continue;
      throw listened;
    }
    return {
      port,
      host,
      queries,
      close: async () => {
        udp.close();
        await new Promise<void>((r) => tcp.close(() => r()));
      },
    };
  }
}

/** A loopback UDP port with nobody behind it (bound then closed): queries to it are refused. */
export async function deadUdpPort(host = '127.0.0.1'): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, host, r));
  const port = s.address().port;
  s.close();
  return port;
}
