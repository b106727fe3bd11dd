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
  // UDP and TCP must share one port number: bind UDP to port 0, then listen on TCP at the same
  // number. Another process may hold that TCP port already (a connection's ephemeral port, on a
  // machine where other tests run too): then try again with a new UDP port.
  const serveTcp = (sock: net.Socket): void => {
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
  };
  let udp: dgram.Socket | undefined;
  let tcp: net.Server | undefined;
  let port = 0;
  for (let attempt = 0; tcp === undefined; attempt++) {
    const u = dgram.createSocket('udp4');
    u.on('message', (msg, rinfo) => {
      const out = answer(msg, 'udp');
      if (out) u.send(out, rinfo.port, rinfo.address);
    });
    await new Promise<void>((r) => u.bind(0, host, r));
    const p = u.address().port;
    const t = net.createServer(serveTcp);
    const err = await new Promise<NodeJS.ErrnoException | undefined>((r) => {
      t.once('error', r);
      t.listen(p, host, () => r(undefined));
    });
    if (err === undefined) {
      udp = u;
      tcp = t;
      port = p;
    } else {
      u.close();
      if (err.code !== 'EADDRINUSE' || attempt >= 20) throw err;
    }
  }
  const udpSocket = udp!;
  const tcpServer = tcp;
  return {
    port,
    host,
    queries,
    close: async () => {
      udpSocket.close();
      await new Promise<void>((r) => tcpServer.close(() => r()));
    },
  };
}

/** A loopback UDP port with nobody behind it (bound then closed): queries to it are refused. */
export async function deadUdpPort(host = '127.0.0.1'): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, host, r));
  const port = s.address().port;
  s.close();
  return port;
}
