/**
 * Lab "isolation": three guests on one vmnat — first a shared network where they reach each
 * other (VirtualBox's "NAT Network"), then `--isolate` (each guest sees only the gateway, as with
 * VirtualBox's plain NAT per VM), then filter rules loaded at run time; the counters show what was
 * blocked.
 *
 * Theory of operation: vmnat gets one `--socket` per guest (each a switch port) and
 * `--dhcp-static` per guest MAC, so vm1/vm2/vm3 are always 10.0.2.15/16/17. The three guests boot
 * at once (qemu `-netdev dgram` each). Phase 1 proves the shared segment with pings between guests.
 * Phase 2 restarts vmnat with `--isolate` on the same sockets — qemu's datagram backend does not
 * notice — and the guests lease again (leases live in vmnat's memory); pings between guests now
 * fail while the gateway still answers, and `vmnat ctl ports` counts the dropped frames. Phase 3
 * loads a rule set with `vmnat ctl filter set` (no restart): vm3 may no longer use the host's web
 * server, vm1 still may; `vmnat ctl filter` shows the rule's hits. Every claim is checked.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Guest } from './lib/guest.ts';
import { runHost, startDnsServer, startWebServer } from './lib/host.ts';
import { bootLabGuest, ctl, drawTopology, guestSh, sha256, shown, startLabVmnat, type LabContext } from './lib/lab.ts';
import { NAT_GUEST_FILES } from './nat.ts';

const GUESTS = [
  { name: 'vm1', mac: '52:54:00:00:00:01', ip: '10.0.2.15' },
  { name: 'vm2', mac: '52:54:00:00:00:02', ip: '10.0.2.16' },
  { name: 'vm3', mac: '52:54:00:00:00:03', ip: '10.0.2.17' },
] as const;

// -x hostname: the guest tells vmnat its name (leases, ports and the picture show it).
const LEASE = 'udhcpc -i eth0 -s /etc/lab-udhcpc.sh -q -n -t 5 -T 2 -x hostname:$(hostname)';

export async function isolationLab(ctx: LabContext): Promise<void> {
  const { t } = ctx;
  t.title('isolation', `
    Three guests on one vmnat. First they share one network and reach each other; then vmnat runs with
    --isolate and each guest sees only the gateway; then filter rules, loaded while vmnat runs, decide
    what a guest may reach on the host. vmnat's counters show what it blocked.`);

  t.step('servers on the host\'s loopback', `
    A web server the guests fetch from through 10.0.2.2, and the DNS server vmnat forwards to.`);
  const page = Buffer.from('hello from the host\n');
  const web = await startWebServer(page, false);
  ctx.cleanup.add('web server', () => web.close());
  const dns = await startDnsServer({});
  ctx.cleanup.add('dns server', () => dns.close());
  t.note(`web server: http://127.0.0.1:${web.port}/; dns server: 127.0.0.1:${dns.port}`);

  const sockets = GUESTS.map((g) => g.name);
  const statics = GUESTS.flatMap((g) => ['--dhcp-static', `${g.mac}=${g.ip}`]);

  // ── phase 1: one shared network ──
  t.step('vmnat with three guests on one network', `
    One --socket per guest: each is a port of vmnat's switch. --dhcp-static pins each MAC's address,
    so vm1, vm2, vm3 are 10.0.2.15, .16, .17 whatever order they ask in.`);
  let v = await startLabVmnat(ctx, dns.port, statics, sockets);
  t.step('boot the three guests (at once)', `
    Three qemu processes, each with -netdev dgram to its own vmnat socket.`);
  const guests = await Promise.all(
    GUESTS.map((g) => bootLabGuest(ctx, v, NAT_GUEST_FILES, [], { name: g.name, mac: g.mac, socket: path.join(ctx.workDir, `${g.name}.sock`) })),
  );
  const [vm1, vm2, vm3] = guests as [Guest, Guest, Guest];
  await leaseAll(ctx, guests);
  const ports = await ctl(ctx, v, ['ports']);
  for (const g of GUESTS) t.check(new RegExp(`\\b${g.mac}\\s+${g.ip.replace(/\./g, '\\.')}\\b`).test(ports.stdout), `vmnat's switch has a port for ${g.name}: ${g.mac} = ${g.ip}`, ports.stdout);

  t.step('the guests reach each other', `
    Without --isolate, vmnat's switch forwards frames between its ports like a real switch: ARP and
    ping go from guest to guest directly, not through the NAT.`);
  const p12 = await guestSh(ctx, vm1, 'ping -c 2 -W 3 10.0.2.16', 30_000);
  t.check(p12.status === 0 && /2 packets received/.test(p12.output), 'vm1 pings vm2');
  const p13 = await guestSh(ctx, vm1, 'ping -c 2 -W 3 10.0.2.17', 30_000);
  t.check(p13.status === 0 && /2 packets received/.test(p13.output), 'vm1 pings vm3');

  // ── phase 2: --isolate ──
  t.step('restart vmnat with --isolate', `
    The guests keep running: qemu's datagram backend just sends to the socket path, which the new vmnat
    binds again. Leases live in vmnat's memory, so each guest asks again.`);
  const stopped = await v.proc.stop();
  t.command('host$', 'kill -TERM <vmnat>', `(vmnat exited with status ${stopped.code})`);
  t.check(stopped.code === 0, 'vmnat stopped cleanly');
  v = await startLabVmnat(ctx, dns.port, [...statics, '--isolate'], sockets);
  await leaseAll(ctx, guests);
  const i12 = await guestSh(ctx, vm1, 'ping -c 2 -W 2 10.0.2.16', 30_000);
  t.check(i12.status !== 0 && /0 packets received/.test(i12.output), 'vm1 can no longer reach vm2');
  const neigh = await guestSh(ctx, vm1, 'ip neigh show 10.0.2.16');
  t.check(/FAILED|INCOMPLETE/.test(neigh.output) || neigh.output.trim() === '', 'vm1 did not even learn vm2\'s MAC: vmnat no longer floods ARP broadcasts between guests');
  const gw = await guestSh(ctx, vm1, 'ping -c 2 -W 3 10.0.2.2', 30_000);
  t.check(gw.status === 0 && /2 packets received/.test(gw.output), 'the gateway still answers vm1');
  t.note(`Even a guest that knows its neighbour's MAC cannot get through: give vm1 a permanent ARP entry
    for vm2 and ping again. The frames reach vmnat addressed to vm2's MAC, and vmnat drops them.`);
  const forced = await guestSh(ctx, vm1, 'arp -s 10.0.2.16 52:54:00:00:00:02 && ping -c 3 -W 2 10.0.2.16', 30_000);
  t.check(forced.status !== 0 && /0 packets received/.test(forced.output), 'still no answer from vm2');
  const iports = await ctl(ctx, v, ['ports']);
  const isolated = (await v.api.ports()).reduce((n, p) => n + (p.drops['isolated'] ?? 0), 0);
  t.check(isolated >= 3 && /isolated=\d+/.test(iports.stdout), `vmnat counted ${isolated} frames dropped between isolated guests (DROPS isolated=…)`, iports.stdout);

  // ── phase 3: filter rules ──
  t.step('filter rules, loaded while vmnat runs', `
    Rules are checked once per new flow, top-down, first match wins; no match passes. This set keeps vm3
    away from the host's web server and lets everyone else through.`);
  const rules = path.join(ctx.workDir, 'rules.conf');
  writeFileSync(rules, `# vm3 may not use the host's web server\nblock out proto tcp from 10.0.2.17 to 10.0.2.2 port ${web.port}\n`);
  const cat = await runHost(['cat', rules]);
  t.command('host$', `cat ${shown(ctx, rules)}`, cat.stdout);
  const set = await ctl(ctx, v, ['filter', 'set', rules]);
  t.check(set.code === 0, 'vmnat took the new rule set', set.stdout);
  const ok1 = await guestSh(ctx, vm1, `timeout 20 wget -q -O - http://10.0.2.2:${web.port}/ | sha256sum`, 40_000);
  t.check(ok1.output.includes(sha256(page)), 'vm1 still fetches the page');
  const no3 = await guestSh(ctx, vm3, `timeout 20 wget -q -O - http://10.0.2.2:${web.port}/`, 40_000);
  t.check(no3.status !== 0 && /refused/i.test(no3.output), 'vm3 is refused (vmnat answers its SYN with a reset)', no3.output);
  const hits = await ctl(ctx, v, ['filter']);
  const rule = (await v.api.filter()).rules[0];
  t.check(rule !== undefined && rule.hits >= 1, `the rule counted ${rule?.hits ?? 0} hit(s)`, hits.stdout);

  t.step('what this lab built', `
    Drawn from vmnat's API: three guests, each alone on its side of vmnat.`);
  const svg = await drawTopology(ctx, v, 'isolation');
  t.check(svg.endsWith('.svg'), `topology written to ${svg}`);
}

/** Each guest leases (one after the other, so the transcript reads in order). */
async function leaseAll(ctx: LabContext, guests: readonly Guest[]): Promise<void> {
  for (const [i, g] of guests.entries()) {
    const want = GUESTS[i]!;
    const r = await guestSh(ctx, g, LEASE, 60_000);
    ctx.t.check(r.status === 0 && r.output.includes(`lease of ${want.ip} obtained`), `${want.name} leased ${want.ip}`, r.output);
  }
}

