/**
 * Lab "hostonly": two guests and the host on a host-only network (VirtualBox's vboxnet0, here
 * vmnat's `--mode host`), then a second network card on NAT for one guest, as the classic
 * VirtualBox-and-Vagrant tutorials do.
 *
 * Theory of operation: vmnat runs with `--mode host` and one `--socket` per guest: it creates the
 * host's TAP vmnat0 with 192.168.56.1/24 in the namespace the lab runs in (the machine's own when a
 * reader runs it as root; a namespace of its own under test/e2e/labs.test.ts) and serves DHCP from
 * 192.168.56.100. A second vmnat, in its default NAT mode, has one socket for vm1's second card.
 * Both guests boot at once; vm1 boots with its second card (eth1) plugged into the NAT vmnat but
 * down. The guests lease in order (vm1 gets .101, vm2 .102), show that they have no default route,
 * ping each other and the host, and the host pings them; a packet for 10.0.2.2 has nowhere to go.
 * Then vm1 brings eth1 up and leases 10.0.2.15 from the NAT vmnat: its routing table now has the
 * host-only network on eth0 and the default route via 10.0.2.2 on eth1, and it fetches a page from
 * the host's loopback through the NAT while vm2 still has no way out. Every claim is checked; the
 * picture is drawn from the host-only vmnat's API, vm1's box completed from the NAT vmnat's lease.
 */
import path from 'node:path';
import { startVmnat } from '../test/helpers/vm.ts';
import { ApiClient } from '../src/api/client.ts';
import type { Guest } from './lib/guest.ts';
import { runHost, startDnsServer, startWebServer } from './lib/host.ts';
import { bootLabGuest, ctl, drawTopology, guestSh, sha256, shown, type LabContext, type LabVmnat } from './lib/lab.ts';
import { NAT_GUEST_FILES } from './nat.ts';

const HOST_IF = 'vmnat0';
const GUESTS = [
  { name: 'vm1', mac: '52:54:00:00:01:01', ip: '192.168.56.101' },
  { name: 'vm2', mac: '52:54:00:00:01:02', ip: '192.168.56.102' },
] as const;
const VM1_NAT_MAC = '52:54:00:00:02:01';

const lease = (iface: string) => `udhcpc -i ${iface} -s /etc/lab-udhcpc.sh -q -n -t 5 -T 2 -x hostname:$(hostname)`;

/** Starts one vmnat (its own API socket), shows the command and its ready line. */
async function labVmnat(ctx: LabContext, tag: string, args: readonly string[]): Promise<LabVmnat> {
  const apiSocket = path.join(ctx.workDir, `${tag}-api.sock`);
  const all = [...args, '--api-socket', apiSocket];
  const proc = await startVmnat(all);
  ctx.cleanup.add(`vmnat (${tag})`, async () => {
    await proc.stop();
  });
  ctx.t.command('host$', `vmnat ${all.map((a) => shown(ctx, a)).join(' ')} &`, proc.stdout().split('\n')[0] ?? '');
  const netSocket = all[all.indexOf('--socket') + 1]!;
  return { proc, api: new ApiClient(apiSocket), apiSocket, netSocket };
}

async function host(ctx: LabContext, argv: string[], timeoutMs = 30_000): Promise<{ code: number | null; out: string }> {
  const r = await runHost(argv, timeoutMs);
  const out = r.stdout + r.stderr;
  ctx.t.command('host$', argv.join(' '), r.code === 0 ? out : `${out}\n(exit status ${r.code})`);
  return { code: r.code, out };
}

export async function hostonlyLab(ctx: LabContext): Promise<void> {
  const { t } = ctx;
  t.title('hostonly', `
    A host-only network: two guests and the host on 192.168.56.0/24, as VirtualBox's vboxnet0. The
    guests get addresses by DHCP and reach each other and the host, and nothing else: there is no
    gateway out. Then one guest gets a second network card on NAT, and its routing table shows which
    card each destination leaves by.`);

  t.step('is 192.168.56.0/24 free here?', `
    The host joins the network through a TAP device vmnat creates (needs root). If VirtualBox's own
    vboxnet0 already holds this network on this machine, the two would fight over it.`);
  const taken = await host(ctx, ['ip', '-4', 'route', 'show', '192.168.56.0/24']);
  t.check(taken.code === 0 && taken.out.trim() === '', 'no interface routes 192.168.56.0/24 yet', taken.out);

  t.step('vmnat in host-only mode', `
    --mode host: vmnat creates ${HOST_IF} with the host's address 192.168.56.1/24 and makes it a port of
    its switch beside the guests' sockets; its DHCP server sits at .100 and leases from .101. No
    gateway, no DNS, no NAT. The ready line says so: no "gateway" field, a "host_ip" one.`);
  const v = await labVmnat(ctx, 'hostonly', ['--mode', 'host', ...GUESTS.flatMap((g) => ['--socket', path.join(ctx.workDir, `${g.name}.sock`)])]);
  const ready = JSON.parse(v.proc.stdout().split('\n')[0] ?? '{}') as Record<string, unknown>;
  t.check(ready['mode'] === 'host' && ready['host_ip'] === '192.168.56.1/24' && ready['gateway'] === undefined, 'vmnat runs in host mode: host 192.168.56.1/24, no gateway');
  const addr = await host(ctx, ['ip', '-4', 'addr', 'show', 'dev', HOST_IF]);
  t.check(/inet 192\.168\.56\.1\/24/.test(addr.out), `the host has 192.168.56.1/24 on ${HOST_IF}`, addr.out);

  t.step('a second vmnat, in NAT mode, for vm1\'s second card', `
    The default mode: 10.0.2.0/24, gateway 10.0.2.2 (the host's loopback), DNS 10.0.2.3 (sent to this
    lab's DNS server on 127.0.0.1). vm1 boots with its second card plugged into it, but down.`);
  const page = Buffer.from('hello from the host, through the NAT card\n');
  const web = await startWebServer(page, false);
  ctx.cleanup.add('web server', () => web.close());
  const dns = await startDnsServer({});
  ctx.cleanup.add('dns server', () => dns.close());
  const natSocket = path.join(ctx.workDir, 'vm1-nat.sock');
  const nat = await labVmnat(ctx, 'nat', ['--socket', natSocket, '--dns-server', `127.0.0.1:${dns.port}`]);

  t.step('boot the two guests (at once)', `
    Each with -netdev dgram to its own socket of the host-only vmnat; vm1 also with a second card
    (eth1) on the NAT vmnat's socket.`);
  const guests = await Promise.all(
    GUESTS.map((g) =>
      bootLabGuest(ctx, v, NAT_GUEST_FILES, [], {
        name: g.name,
        mac: g.mac,
        socket: path.join(ctx.workDir, `${g.name}.sock`),
        ...(g.name === 'vm1' ? { secondNic: { socket: natSocket, mac: VM1_NAT_MAC } } : {}),
      }),
    ),
  );
  const [vm1, vm2] = guests as [Guest, Guest];

  t.step('addresses by DHCP', `
    vm1 asks first, then vm2: the host-only network's DHCP server (vmnat, 192.168.56.100) hands out
    .101 and .102, with no router and no DNS server.`);
  for (const [i, g] of guests.entries()) {
    const want = GUESTS[i]!;
    const r = await guestSh(ctx, g, lease('eth0'), 60_000);
    t.check(r.status === 0 && r.output.includes(`lease of ${want.ip} obtained from 192.168.56.100`), `${want.name} leased ${want.ip} from 192.168.56.100`, r.output);
  }
  const lf = await guestSh(ctx, vm1, 'cat /var/lib/udhcpc/eth0.lease');
  t.check(/^router=$/m.test(lf.output) && /^dns=$/m.test(lf.output), 'the lease names no router and no DNS server');
  const routes1 = await guestSh(ctx, vm1, 'ip route');
  t.check(/^192\.168\.56\.0\/24 dev eth0/m.test(routes1.output) && !/default/.test(routes1.output), 'vm1 has the host-only network and no default route', routes1.output);
  const leases = await ctl(ctx, v, ['leases']);
  t.check(GUESTS.every((g) => leases.stdout.includes(g.ip)), 'vmnat lists both leases');

  t.step('guest to guest, host to guest', `
    vmnat's switch forwards frames between its ports: the two guests' sockets and the host's TAP. The
    host's own kernel answers for 192.168.56.1: ARP and ping reach it through ${HOST_IF}.`);
  const g12 = await guestSh(ctx, vm1, 'ping -c 2 -W 3 192.168.56.102', 30_000);
  t.check(g12.status === 0 && /2 packets received/.test(g12.output), 'vm1 pings vm2');
  const g2h = await guestSh(ctx, vm2, 'ping -c 2 -W 3 192.168.56.1', 30_000);
  t.check(g2h.status === 0 && /2 packets received/.test(g2h.output), 'vm2 pings the host');
  for (const g of GUESTS) {
    const r = await host(ctx, ['busybox', 'ping', '-c', '2', '-W', '3', g.ip], 30_000);
    t.check(r.code === 0 && /2 packets received/.test(r.out), `the host pings ${g.name} (${g.ip})`, r.out);
  }
  const ports = await ctl(ctx, v, ['ports']);
  t.check(ports.stdout.includes(HOST_IF) && GUESTS.every((g) => ports.stdout.includes(g.ip)), `vmnat's switch has three ports: ${HOST_IF} (the host) and the two guests`, ports.stdout);

  t.step('no route out', `
    Nothing on this network leads anywhere else: the guests have no default route, and vmnat runs no
    NAT. A packet for 10.0.2.2 — the NAT gateway of the next step — cannot even leave vm2.`);
  const out2 = await guestSh(ctx, vm2, 'ping -c 1 -W 2 10.0.2.2', 30_000);
  t.check(out2.status !== 0 && /unreachable/i.test(out2.output), 'vm2: 10.0.2.2 is unreachable', out2.output);

  t.step('a second card on NAT for vm1', `
    As in the classic tutorial, where a host-only VM gets a NAT adapter to reach the internet: vm1's
    eth1 comes up and leases from the NAT vmnat. Its routing table shows the split: the host-only
    network on eth0, everything else by the default route via 10.0.2.2 on eth1.`);
  await guestSh(ctx, vm1, 'ip link set eth1 up');
  const l2 = await guestSh(ctx, vm1, lease('eth1'), 60_000);
  t.check(l2.status === 0 && l2.output.includes('lease of 10.0.2.15 obtained from 10.0.2.2'), 'vm1\'s eth1 leased 10.0.2.15 from 10.0.2.2', l2.output);
  const routes = await guestSh(ctx, vm1, 'ip route');
  t.check(/^default via 10\.0\.2\.2 dev eth1/m.test(routes.output), 'default via 10.0.2.2 dev eth1', routes.output);
  t.check(/^10\.0\.2\.0\/24 dev eth1/m.test(routes.output), '10.0.2.0/24 on eth1 (the NAT network)', routes.output);
  t.check(/^192\.168\.56\.0\/24 dev eth0/m.test(routes.output), '192.168.56.0/24 still on eth0 (the host-only network)', routes.output);
  const get = await guestSh(ctx, vm1, `ip route get 192.168.56.1; ip route get 10.0.2.2`);
  t.check(/192\.168\.56\.1 dev eth0/.test(get.output) && /10\.0\.2\.2 dev eth1/.test(get.output), 'the host-only address leaves by eth0, the NAT gateway by eth1', get.output);
  const fetch = await guestSh(ctx, vm1, `timeout 20 wget -q -O - http://10.0.2.2:${web.port}/ | sha256sum`, 40_000);
  t.check(fetch.output.includes(sha256(page)), 'vm1 fetches a page from the host\'s 127.0.0.1 through the NAT card (sha256 matches)', fetch.output);
  const h1 = await guestSh(ctx, vm1, 'ping -c 2 -W 3 192.168.56.1', 30_000);
  t.check(h1.status === 0 && /2 packets received/.test(h1.output), 'vm1 still reaches the host on the host-only network');
  const still = await guestSh(ctx, vm2, 'ip route');
  t.check(!/default/.test(still.output), 'vm2 still has no way out', still.output);
  const natLeases = await nat.api.leases();
  const natLease = natLeases.find((l) => l.mac === VM1_NAT_MAC);
  t.check(natLease?.ip === '10.0.2.15', `the NAT vmnat leased 10.0.2.15 to vm1's second card (${VM1_NAT_MAC})`);

  t.step('what this lab built', `
    Drawn from the host-only vmnat's API; vm1's second card from the NAT vmnat's lease.`);
  const svg = await drawTopology(ctx, v, 'hostonly', { vm1: [`eth1 10.0.2.15/24 via 10.0.2.2`, '  (NAT: a second vmnat)'] });
  t.check(svg.endsWith('.svg'), `topology written to ${svg}`);
}
