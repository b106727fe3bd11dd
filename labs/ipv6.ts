/**
 * Lab "ipv6": the guest configures IPv6 from vmnat's router advertisement (SLAAC), learns its DNS
 * server from the advertisement's RDNSS option, fetches a page from the host's ::1 through the IPv6
 * gateway, and is reached from the host through a port forward listening on [::1].
 *
 * Theory of operation: one qemu guest on `-netdev dgram`, vmnat with `--pcap` so the router
 * advertisement can be read with tcpdump (the guest's busybox has no RDNSS client: the lab shows the
 * option on the wire, then does what rdnssd or systemd-networkd would do with it — write the
 * address into resolv.conf). The guest also leases IPv4 by DHCP: it is dual-stack, as a real VM is,
 * and the closing picture shows both families. The host's web server listens on ::1 only, so the
 * page can only have come over IPv6. Every claim is checked.
 */
import { statSync } from 'node:fs';
import path from 'node:path';
import { runHost, startDnsServer, startWebServer } from './lib/host.ts';
import { bootLabGuest, ctl, drawTopology, guestSh, sha256, shown, startLabVmnat, type LabContext } from './lib/lab.ts';
import { NAT_GUEST_FILES } from './nat.ts';

const PREFIX = 'fd00:10:0:2::';
const GW6 = 'fd00:10:0:2::2';
const DNS6 = 'fd00:10:0:2::3';
/** SLAAC's interface identifier from MAC 52:54:00:12:34:56 (modified EUI-64, RFC 4291 appendix A). */
const SLAAC = 'fd00:10:0:2:5054:ff:fe12:3456';

export async function ipv6Lab(ctx: LabContext): Promise<void> {
  const { t } = ctx;
  t.title('ipv6', `
    vmnat gives the guest a dual-stack network: besides 10.0.2.0/24 there is the IPv6 prefix
    ${PREFIX}/64, with the gateway at ::2 and DNS at ::3, as .2 and .3 in IPv4. The guest configures
    itself from vmnat's router advertisement (no DHCP needed), reaches the host's ::1 through ::2, and
    the host reaches the guest through a port forward on [::1].`);

  t.step('servers on the host\'s loopback', `
    A web server on [::1] only (so a page that arrives came over IPv6), and the DNS server vmnat
    forwards to, with an AAAA record.`);
  const page = Buffer.from('<!doctype html>\n<title>vmnat lab: hello over IPv6</title>\n<p>Served on the host\'s [::1]; the guest asked the IPv6 gateway.\n');
  const web = await startWebServer(page, true, '::1');
  ctx.cleanup.add('web server', () => web.close());
  const dns = await startDnsServer({ 'www.lab.test': '2001:db8::80' });
  ctx.cleanup.add('dns server', () => dns.close());
  t.note(`web server: http://[::1]:${web.port}/; dns server: 127.0.0.1:${dns.port} (www.lab.test AAAA 2001:db8::80)`);

  t.step('vmnat, with a capture', `
    IPv6 is on by default. The ready line names the prefix and vmnat's two IPv6 addresses.
    --pcap records every frame between the guest and vmnat, so we can read the router advertisement.`);
  const pcap = path.join(ctx.outDir, 'ipv6.pcap');
  const v = await startLabVmnat(ctx, dns.port, ['--pcap', pcap]);
  const ready = JSON.parse(v.proc.stdout().split('\n')[0] ?? '{}') as Record<string, unknown>;
  t.check(ready['ipv6_prefix'] === `${PREFIX}/64` && ready['gateway6'] === GW6 && ready['dns6'] === DNS6, `vmnat announces ${PREFIX}/64, gateway ${GW6}, DNS ${DNS6}`);

  const guest = await bootLabGuest(ctx, v, NAT_GUEST_FILES);

  t.step('the guest brings eth0 up: SLAAC', `
    With the link up, the guest's kernel sends a router solicitation; vmnat answers with a router
    advertisement from fe80::2. The advertisement's prefix option has the "autonomous" flag, so the
    kernel forms its own address: the prefix plus an interface identifier made from its MAC
    (52:54:00:12:34:56 -> 5054:ff:fe12:3456). It checks first that nobody else uses it (duplicate
    address detection: vmnat stays silent, it never claims a guest's address).`);
  await guestSh(ctx, guest, 'ip link set eth0 up');
  const addr = await guestSh(ctx, guest, `n=0; until ip -6 addr show dev eth0 | grep -q "${SLAAC}.*global dynamic" && ! ip -6 addr show dev eth0 | grep -q tentative; do [ $n -ge 100 ] && break; n=$((n+1)); sleep 0.1; done; ip -6 addr show dev eth0`, 30_000);
  t.check(new RegExp(`inet6 ${SLAAC}/64 scope global dynamic`).test(addr.output), `eth0 has the SLAAC address ${SLAAC}/64`, addr.output);
  t.check(/inet6 fe80::5054:ff:fe12:3456\/64 scope link/.test(addr.output), 'and its link-local twin fe80::5054:ff:fe12:3456');
  t.check(!/tentative|dadfailed/.test(addr.output), 'duplicate address detection passed');
  const route = await guestSh(ctx, guest, 'ip -6 route');
  t.check(/^default via fe80::2 dev eth0/m.test(route.output), 'the default route goes via fe80::2, the router\'s link-local address');
  t.check(new RegExp(`^${PREFIX.replace(/:/g, ':')}/64 dev eth0`, 'm').test(route.output), `${PREFIX}/64 is on-link`);
  const neigh = await guestSh(ctx, guest, `ping -6 -c 2 -W 3 ${GW6} && ip -6 neigh show dev eth0`, 30_000);
  t.check(/2 packets received/.test(neigh.output), `vmnat answers ping -6 ${GW6}`);
  t.check(/fe80::2 lladdr 52:55:0a:00:02:02 router/.test(neigh.output) || new RegExp(`${GW6} lladdr 52:55:0a:00:02:02`).test(neigh.output), 'neighbour discovery resolved vmnat\'s addresses to its gateway MAC 52:55:0a:00:02:02', neigh.output);

  t.step('the router advertisement on the wire', `
    Read from vmnat's capture with tcpdump (-v decodes the options): the prefix, the MTU, and RDNSS and
    DNSSL (RFC 8106), which name the DNS server ${DNS6} and the search domain.`);
  const ra = await runHost(['tcpdump', '-nn', '-v', '-r', pcap, 'icmp6 and ip6[40] == 134']);
  t.command('host$', `tcpdump -nn -v -r ${pcap} 'icmp6 and ip6[40] == 134'`, ra.stdout);
  t.check(/fe80::2 > (ff02::1|fe80::5054:ff:fe12:3456): .*router advertisement/.test(ra.stdout), 'vmnat advertised itself from fe80::2', ra.stdout);
  t.check(/router lifetime [1-9]\d*s/.test(ra.stdout), 'as a default router (router lifetime above 0)');
  t.check(/prefix info option \(3\).*: fd00:10:0:2::\/64, Flags \[onlink, auto\]/.test(ra.stdout), `prefix ${PREFIX}/64, on-link and autonomous (SLAAC)`);
  t.check(/mtu option \(5\).*:\s+1500$/m.test(ra.stdout), 'MTU 1500');
  t.check(new RegExp(`rdnss option \\(25\\).*addr: ${DNS6}$`, 'm').test(ra.stdout), `RDNSS: ${DNS6}`);
  t.check(/dnssl option \(31\).*domain\(s\): vmnat\.internal\.$/m.test(ra.stdout), 'DNSSL: vmnat.internal');

  t.step('DNS from RDNSS', `
    This guest's busybox has no RDNSS client, so do what rdnssd or systemd-networkd would do with the
    option: write the advertised server into /etc/resolv.conf. Then look names up over IPv6: vmnat
    listens on ${DNS6} too, forwards to the lab's DNS server, and passes AAAA answers through.`);
  await guestSh(ctx, guest, `printf 'nameserver ${DNS6}\\nsearch vmnat.internal\\n' > /etc/resolv.conf; cat /etc/resolv.conf`);
  const before = dns.queries.length;
  const look = await guestSh(ctx, guest, `nslookup -type=AAAA www.lab.test ${DNS6}`, 30_000);
  t.check(new RegExp(`Server:\\s+${DNS6}`).test(look.output) && /Address:\s+2001:db8::80/.test(look.output), 'www.lab.test has AAAA 2001:db8::80, asked over IPv6', look.output);
  t.check(dns.queries.slice(before).includes('www.lab.test AAAA'), `the lab's DNS server on 127.0.0.1:${dns.port} received the AAAA query (from vmnat)`);
  const host6 = await guestSh(ctx, guest, `nslookup -type=AAAA host.vmnat.internal ${DNS6}`, 30_000);
  t.check(new RegExp(`Address:\\s+${GW6}`).test(host6.output), `host.vmnat.internal, the host's name, has the IPv6 twin ${GW6} (vmnat answers it itself)`, host6.output);

  t.step(`fetch a page from the host's ::1 through ${GW6}`, `
    ${GW6} is to IPv6 what 10.0.2.2 is to IPv4: vmnat terminates the guest's connection and opens a host
    socket to ::1. The web server holds its answer while we look at vmnat's flow table.`);
  const fetched = performance.now();
  const bg = await guestSh(ctx, guest, `timeout 60 wget -O /tmp/index.html http://[${GW6}]:${web.port}/ >/tmp/wget.log 2>&1 & echo $! >/tmp/wget.pid`);
  t.check(bg.status === 0, 'wget runs in the guest (in the background)');
  let timer: NodeJS.Timeout | undefined;
  const held = await Promise.race([
    web.nextHeld(),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('the guest\'s request did not reach the web server within 30 s')), 30_000);
    }),
  ]).finally(() => clearTimeout(timer));
  t.note(`The web server got GET ${held.url} from [${held.remoteAddress}]:${held.remotePort}: a host socket on ::1.`);
  const flows = await ctl(ctx, v, ['flows']);
  const flowRe = new RegExp(`^tcp\\s+\\[${SLAAC}\\]:\\d+\\s+\\[${GW6}\\]:${web.port}\\s+-\\s+established\\b.*\\[::1\\]:${held.remotePort} -> \\[::1\\]:${web.port}$`, 'm');
  t.check(flowRe.test(flows.stdout), `vmnat's flow table maps [${SLAAC}]:* -> [${GW6}]:${web.port} to the host socket [::1]:${held.remotePort} -> [::1]:${web.port}`, flows.stdout);
  held.release();
  const got = await guestSh(ctx, guest, 'wait $(cat /tmp/wget.pid); echo "wget exit $?"; sha256sum /tmp/index.html', 60_000);
  ctx.timings['fetch_ms'] = Math.round(performance.now() - fetched);
  t.check(/^wget exit 0$/m.test(got.output) && got.output.includes(`${sha256(page)}  /tmp/index.html`), `the guest's copy has the page's sha256 (${sha256(page).slice(0, 16)}…)`, got.output);

  t.step('dual stack: IPv4 by DHCP beside it', `
    The same guest leases 10.0.2.15 as in the nat lab. Both families now work side by side; the
    picture at the end shows both addresses.`);
  const lease = await guestSh(ctx, guest, 'udhcpc -i eth0 -s /etc/lab-udhcpc.sh -q -n -t 5 -T 2', 60_000);
  t.check(lease.status === 0 && /lease of 10\.0\.2\.15 obtained/.test(lease.output), 'the guest leased 10.0.2.15 too', lease.output);
  const leases = await ctl(ctx, v, ['leases']);
  t.check(new RegExp(`^10\\.0\\.2\\.15\\s+52:54:00:12:34:56\\s.*\\s${SLAAC}$`, 'm').test(leases.stdout), `vmnat's lease list shows both: 10.0.2.15 by DHCP, ${SLAAC} seen in use`, leases.stdout);

  t.step('a port forward on [::1] into the guest', `
    A web server in the guest (busybox httpd, listening on IPv6 and IPv4), and a forward that listens on
    the host's [::1] only and goes to the guest's IPv6 address.`);
  await guestSh(ctx, guest, 'mkdir -p /www && cp /tmp/index.html /www/index.html && httpd -p 8080 -h /www');
  const listening = await guestSh(ctx, guest, 'n=0; until netstat -tln | grep -q ":8080 "; do [ $n -ge 100 ] && break; n=$((n+1)); sleep 0.1; done; netstat -tln');
  t.check(/:::8080\s.*LISTEN/.test(listening.output), 'the guest listens on [::]:8080');
  const add = await ctl(ctx, v, ['forward', 'add', '--name', 'web6', `tcp:[::1]:0-[${SLAAC}]:8080`]);
  const added = /^added web6: tcp \[::1\]:(\d+) -> guest \[([0-9a-f:]+)\]:8080$/m.exec(add.stdout);
  t.check(add.code === 0 && added !== null && added[2] === SLAAC, `vmnat listens on [::1]:${added?.[1] ?? '?'} for the guest's [${SLAAC}]:8080`, add.stdout);
  const fport = Number(added?.[1] ?? 0);
  const curl = await runHost(['curl', '-sS', '-g', '--max-time', '20', `http://[::1]:${fport}/`]);
  t.command('host$', `curl -g http://[::1]:${fport}/`, curl.stdout + curl.stderr);
  t.check(curl.code === 0 && sha256(Buffer.from(curl.stdout)) === sha256(page), 'the host fetched the guest\'s page through [::1] (same sha256)');
  const v4 = await runHost(['curl', '-sS', '--max-time', '5', `http://127.0.0.1:${fport}/`]);
  t.command('host$', `curl http://127.0.0.1:${fport}/`, v4.stdout + v4.stderr);
  t.check(v4.code !== 0, 'a forward on [::1] is IPv6 only: 127.0.0.1 on that port is refused');

  t.step('what this lab built', `
    Drawn from vmnat's API: the guest with its IPv4 lease and its SLAAC address, vmnat's two networks,
    and the [::1] forward.`);
  const svg = await drawTopology(ctx, v, 'ipv6');
  t.check(svg.endsWith('.svg'), `topology written to ${svg}`);
  t.check(statSync(pcap).size > 24, `the capture is kept: ${shown(ctx, pcap)}`);
}
