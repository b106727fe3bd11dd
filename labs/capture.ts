/**
 * Lab "capture": what is on the wire between a VM and vmnat — a DHCP exchange and a TCP
 * connection through the NAT, captured with `vmnat --pcap` and read back with tcpdump, frame by
 * frame.
 *
 * Theory of operation: vmnat writes every frame it receives from or sends to the guest into a
 * classic pcap file (src/pcap.ts): the guest's side of the NAT, exactly what crossed the virtual
 * cable. The lab boots the guest, leases an address, fetches a page from the host through
 * 10.0.2.2, then stops the guest and vmnat (so the file is complete) and runs
 * `tcpdump -r FILE -nn -e -v`. Each frame's tcpdump text is classified by `explainFrame()` (in
 * lib/frames.ts, unit-tested on tcpdump's own output) and printed with what it means. The lab
 * checks what a reader would look for: DISCOVER, OFFER, REQUEST, ACK in that order; SYN,
 * SYN-ACK, ACK of one connection in that order; every frame explained.
 */
import path from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { bootLabGuest, drawTopology, guestSh, sha256, startLabVmnat, type LabContext } from './lib/lab.ts';
import { runHost, startDnsServer, startWebServer } from './lib/host.ts';
import { explainCapture, splitTcpdump, type FrameKind } from './lib/frames.ts';

const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/\${mask:-24}" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    ;;
esac
exit 0
`;

export async function captureLab(ctx: LabContext): Promise<void> {
  const { t } = ctx;
  t.title('capture', `
    What crosses the virtual cable between a VM and vmnat: a DHCP exchange and one TCP connection
    through the NAT, captured by vmnat itself (--pcap) and read with tcpdump, frame by frame.`);

  t.step('servers on the host\'s loopback, and vmnat with --pcap', `
    A web server on 127.0.0.1 for the guest to fetch from, a DNS server for vmnat to forward to (the
    guest will not need it here, but vmnat never uses the host's resolv.conf in a lab), and vmnat
    writing every guest-side frame to a pcap file.`);
  const page = Buffer.from('hello through the NAT\n');
  const web = await startWebServer(page, false);
  ctx.cleanup.add('web server', () => web.close());
  const dns = await startDnsServer({});
  ctx.cleanup.add('dns server', () => dns.close());
  t.note(`web server: http://127.0.0.1:${web.port}/ (${page.length} bytes); dns server: 127.0.0.1:${dns.port}`);
  const pcap = path.join(ctx.outDir, 'capture.pcap');
  const v = await startLabVmnat(ctx, dns.port, ['--pcap', pcap]);
  t.check(existsSync(pcap), `vmnat opened ${pcap}`);

  t.step('boot the guest, lease, and fetch one page through 10.0.2.2', `
    Every frame from power-on on is captured: udhcpc leases, then wget opens one TCP connection to
    10.0.2.2:${web.port}.`);
  const guest = await bootLabGuest(ctx, v, { 'etc/lab-udhcpc.sh': UDHCPC_SCRIPT });
  const lease = await guestSh(ctx, guest, 'udhcpc -i eth0 -s /etc/lab-udhcpc.sh -q -n -t 5 -T 2', 60_000);
  t.check(lease.status === 0 && /lease of 10\.0\.2\.15 obtained from 10\.0\.2\.2/.test(lease.output), 'the guest leased 10.0.2.15', lease.output);
  const fetch = await guestSh(ctx, guest, `timeout 30 wget -q -O - http://10.0.2.2:${web.port}/ | sha256sum`, 60_000);
  t.check(fetch.output.includes(sha256(page)), 'the page arrived intact (same sha256 as the host\'s copy)', fetch.output);

  t.step('the picture, then stop the guest and vmnat', `
    The topology first (vmnat's API goes away with vmnat); stopping vmnat then flushes and closes the
    capture file.`);
  await drawTopology(ctx, v, 'capture');
  await guest.stop();
  const stopped = await v.proc.stop();
  t.check(stopped.code === 0, 'vmnat exited cleanly (SIGTERM → exit 0)');
  t.check(statSync(pcap).size > 24, `the capture holds frames (${statSync(pcap).size} bytes)`);

  t.step('read the capture with tcpdump', `
    -nn: numbers, not names (and no DNS lookups); -e: the Ethernet header (MAC addresses) too;
    -v: decode DHCP options. Below, each frame with what it means.`);
  // -tt (seconds since the epoch) for the frame-by-frame reading: its times still compare across midnight.
  const read = await runHost(['tcpdump', '-nn', '-tt', '-e', '-v', '-r', pcap]);
  t.check(read.code === 0, 'tcpdump read the file', read.stderr);
  const frames = splitTcpdump(read.stdout);
  const brief = await runHost(['tcpdump', '-nn', '-r', pcap]);
  t.command('host$', `tcpdump -nn -r ${pcap}`, brief.stdout);
  t.check(brief.stdout.trim().split('\n').length === frames.length, `${frames.length} frames, one line each`);
  t.check(frames.every((f, i) => i === 0 || f.time >= frames[i - 1]!.time), 'timestamps never go backwards (frames are in the order vmnat saw them)');

  t.step('frame by frame', `
    From tcpdump -nn -e -v (the first line of each frame, and the DHCP message type where there is one).`);
  const explained = explainCapture(frames);
  for (const e of explained) {
    t.raw(`#${String(e.index).padStart(2)} ${e.summary}`);
    t.raw(`     ↳ ${e.meaning}`);
  }
  const kinds = explained.map((e) => e.kind);
  const order = (wanted: readonly FrameKind[]): boolean => {
    let at = -1;
    for (const k of wanted) {
      at = kinds.indexOf(k, at + 1);
      if (at < 0) return false;
    }
    return true;
  };
  t.check(order(['dhcp-discover', 'dhcp-offer', 'dhcp-request', 'dhcp-ack']), 'the DHCP exchange is all there, in order: DISCOVER, OFFER, REQUEST, ACK', kinds.join(' '));
  t.check(order(['tcp-syn', 'tcp-syn-ack', 'tcp-handshake-ack']), 'the TCP handshake is all there, in order: SYN, SYN-ACK, ACK', kinds.join(' '));
  t.check(explained.every((e) => e.kind !== 'unknown'), 'every frame is explained');
}
