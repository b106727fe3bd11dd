/**
 * Lab "nat": a VM behind NAT, the way VirtualBox's default network works, step by step.
 *
 * Theory of operation: the lab starts its own DNS and web servers on the host's loopback, vmnat
 * pointed at that DNS server, and the test guest in qemu; then it walks the reader through what
 * the guest got (interface, routes, lease, resolv.conf), name resolution through 10.0.2.3, a
 * download from the host through the gateway 10.0.2.2 — held open by the web server while the lab
 * shows vmnat's flow table and the host socket behind the guest's connection (`ss`, the
 * classic tutorial's `netstat` of VBoxHeadless) — and finally a port forward added at run time,
 * host 127.0.0.1:2222 → guest port 22, where the guest runs Debian's dropbear (an extra initramfs
 * archive, scripts/build-guest-ssh.sh); the host logs in with ssh and a key made for the run, and
 * looks at one open session from the host (ss), from vmnat (ctl flows) and from the guest
 * (netstat). Every claim is checked; the lab ends with the topology drawn from vmnat's API.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { bootLabGuest, ctl, drawTopology, ensureSshArchive, guestSh, sha256, shown, startLabVmnat, type LabContext } from './lib/lab.ts';
import { runHost, startDnsServer, startWebServer } from './lib/host.ts';

/**
 * The guest's DHCP event script: unlike the tests' one, it writes resolv.conf and a lease file, as a
 * distribution's would. It flushes IPv4 addresses only: the IPv6 ones (SLAAC, the ipv6 lab) are not DHCP's.
 */
const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/\${mask:-24}" \${broadcast:+broadcast "$broadcast"} dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    mkdir -p /var/lib/udhcpc
    printf 'ip=%s\\nsubnet=%s\\nrouter=%s\\ndns=%s\\nlease=%s\\nserverid=%s\\n' "$ip" "$subnet" "$router" "$dns" "$lease" "$serverid" > "/var/lib/udhcpc/$interface.lease"
    ;;
esac
exit 0
`;

export const NAT_GUEST_FILES: Readonly<Record<string, string>> = {
  'etc/lab-udhcpc.sh': UDHCPC_SCRIPT,
};

/** The page the host serves: the guest's copy must hash the same. */
export function natPage(): Buffer {
  return Buffer.from(
    [
      '<!doctype html>',
      '<title>vmnat lab: hello from the host</title>',
      '<p>This page was served by a web server on the host\'s 127.0.0.1.',
      '<p>The guest asked 10.0.2.2, vmnat\'s gateway address; vmnat opened a host socket to 127.0.0.1.',
      '',
    ].join('\n'),
  );
}

/** A key pair for this run, made with the host's ssh-keygen in $LAB (removed with it). */
async function makeSshKey(ctx: LabContext): Promise<{ privateKey: string; publicKey: string }> {
  const privateKey = path.join(ctx.workDir, 'id_ed25519');
  const r = await runHost(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'vmnat-lab', '-f', privateKey]);
  if (r.code !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  return { privateKey, publicKey: readFileSync(`${privateKey}.pub`, 'utf8') };
}

/** Options that make ssh ignore the user's config and known hosts: the guest's host key is new at every boot. */
const SSH_OPTIONS = ['-F', '/dev/null', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'ConnectTimeout=60'];

function sshArgv(port: number, privateKey: string): string[] {
  return ['ssh', ...SSH_OPTIONS, '-i', privateKey, '-p', String(port), 'root@127.0.0.1'];
}

function sshShown(ctx: LabContext, port: number): string {
  return `ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -i ${shown(ctx, path.join(ctx.workDir, 'id_ed25519'))} -p ${port} root@127.0.0.1`;
}

export async function natLab(ctx: LabContext): Promise<void> {
  const { t } = ctx;
  t.title('nat', `
    A VM behind NAT, as VirtualBox and qemu's user networking give it: the guest leases 10.0.2.15 from
    vmnat's DHCP server, reaches the host through the gateway 10.0.2.2, resolves names through 10.0.2.3,
    and is reached from the host only through a port forward.`);

  // ── 1. the host's servers ──
  t.step('servers on the host\'s loopback', `
    The lab runs a web server and a DNS server on 127.0.0.1, on ports the kernel picks. Nothing in the
    lab talks to any other machine: the guest's DNS goes to this server, not to the host's resolv.conf.`);
  const page = natPage();
  const pageFile = path.join(ctx.outDir, 'nat-page.html');
  writeFileSync(pageFile, page);
  const web = await startWebServer(page, true);
  ctx.cleanup.add('web server', () => web.close());
  const dns = await startDnsServer({ 'host.lab.test': '10.0.2.2' });
  ctx.cleanup.add('dns server', () => dns.close());
  t.note(`web server: http://127.0.0.1:${web.port}/ serves ${pageFile} (${page.length} bytes, sha256 ${sha256(page)})`);
  t.note(`dns server: 127.0.0.1:${dns.port} (udp), zone: host.lab.test A 10.0.2.2`);

  // ── 2. vmnat ──
  t.step('start vmnat', `
    vmnat listens on a unix datagram socket for the VM's Ethernet frames, and on an API socket for
    vmnat ctl. --dns-server sends the guest's DNS queries to the lab's server. Its first line says it is
    ready, with the network it will hand out.`);
  const v = await startLabVmnat(ctx, dns.port);
  t.check(v.proc.ready['guest_ip'] === '10.0.2.15' && v.proc.ready['gateway'] === '10.0.2.2' && v.proc.ready['dns'] === '10.0.2.3', 'vmnat is ready: guest 10.0.2.15, gateway 10.0.2.2, dns 10.0.2.3');

  // ── 3. the guest ──
  t.step('boot the guest', `
    qemu runs a Debian kernel with a busybox initramfs under TCG (no KVM needed). Its virtio NIC is
    qemu's "dgram" network backend: each Ethernet frame is one datagram to vmnat's socket.`);
  const key = await makeSshKey(ctx);
  const guest = await bootLabGuest(ctx, v, { ...NAT_GUEST_FILES, 'root/.ssh/authorized_keys': key.publicKey }, [ensureSshArchive()]);
  t.check(guest.bootMs > 0, `the guest booted to a shell in ${(guest.bootMs / 1000).toFixed(1)} s`);

  // ── 4. DHCP ──
  t.step('the guest asks for an address (DHCP)', `
    busybox udhcpc broadcasts DISCOVER; vmnat's DHCP server offers 10.0.2.15, the guest REQUESTs it and
    vmnat ACKs. The event script then configures eth0, the default route and /etc/resolv.conf.`);
  const leased = performance.now();
  const lease = await guestSh(ctx, guest, 'udhcpc -i eth0 -s /etc/lab-udhcpc.sh -q -n -t 5 -T 2', 60_000);
  ctx.timings['dhcp_ms'] = Math.round(performance.now() - leased);
  t.check(lease.status === 0 && /lease of 10\.0\.2\.15 obtained from 10\.0\.2\.2/.test(lease.output), 'the guest leased 10.0.2.15 from 10.0.2.2', lease.output);

  t.step('what the guest got', `
    The interface, the routes, the lease and the resolver: everything a guest on VirtualBox's NAT sees.`);
  const addr = await guestSh(ctx, guest, 'ip -4 addr show dev eth0');
  t.check(/inet 10\.0\.2\.15\/24 /.test(addr.output), 'eth0 has 10.0.2.15/24');
  const route = await guestSh(ctx, guest, 'ip route');
  t.check(/^default via 10\.0\.2\.2 dev eth0/m.test(route.output), 'the default route goes via 10.0.2.2');
  t.check(/^10\.0\.2\.0\/24 dev eth0/m.test(route.output), '10.0.2.0/24 is on-link (the gateway and DNS are "neighbours")');
  const leaseFile = await guestSh(ctx, guest, 'cat /var/lib/udhcpc/eth0.lease');
  t.check(/^lease=86400$/m.test(leaseFile.output) && /^serverid=10\.0\.2\.2$/m.test(leaseFile.output), 'a lease of 86400 s from the DHCP server 10.0.2.2');
  const resolv = await guestSh(ctx, guest, 'cat /etc/resolv.conf');
  t.check(/^nameserver 10\.0\.2\.3$/m.test(resolv.output), 'resolv.conf names 10.0.2.3');
  const leases = await ctl(ctx, v, ['leases']);
  t.check(new RegExp(`^10\\.0\\.2\\.15\\s+${'52:54:00:12:34:56'}\\s+\\S+\\s+bound`, 'm').test(leases.stdout), 'vmnat lists the lease: 10.0.2.15 bound to the guest\'s MAC');

  // ── 5. DNS ──
  t.step('a name lookup through 10.0.2.3', `
    10.0.2.3 is not a real server: vmnat answers there and forwards each query to the host's resolver,
    here the lab's DNS server on 127.0.0.1:${dns.port}.`);
  const before = dns.queries.length;
  const look = await guestSh(ctx, guest, 'nslookup host.lab.test');
  t.check(/Server:\s+10\.0\.2\.3/.test(look.output) && /Address:\s+10\.0\.2\.2\b/.test(look.output.slice(look.output.indexOf('host.lab.test'))), 'the guest asked 10.0.2.3 and got host.lab.test = 10.0.2.2');
  t.check(dns.queries.slice(before).some((q) => q === 'host.lab.test A'), `the lab's DNS server on 127.0.0.1:${dns.port} received the query (from vmnat)`);

  // ── 6. a download through the gateway ──
  t.step('fetch a page from the host through 10.0.2.2', `
    The guest connects to 10.0.2.2:${web.port}. vmnat terminates that TCP connection itself and opens an
    ordinary socket on the host to 127.0.0.1:${web.port}: the host sees a local client, vmnat's process.
    The lab's web server holds its answer back until we have looked at both ends.`);
  const fetched = performance.now();
  const bg = await guestSh(ctx, guest, `timeout 60 wget -O /tmp/index.html http://10.0.2.2:${web.port}/ >/tmp/wget.log 2>&1 & echo $! >/tmp/wget.pid`);
  t.check(bg.status === 0, 'wget runs in the guest (in the background)');
  let timer: NodeJS.Timeout | undefined;
  const held = await Promise.race([
    web.nextHeld(),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('the guest\'s request did not reach the web server within 30 s')), 30_000);
    }),
  ]).finally(() => clearTimeout(timer));
  t.note(`The web server got GET ${held.url} from ${held.remoteAddress}:${held.remotePort}: a host socket.`);
  const flows = await ctl(ctx, v, ['flows']);
  const flowRe = new RegExp(`^tcp\\s+10\\.0\\.2\\.15:(\\d+)\\s+10\\.0\\.2\\.2:${web.port}\\s+-\\s+established\\b.*\\s127\\.0\\.0\\.1:${held.remotePort} -> 127\\.0\\.0\\.1:${web.port}$`, 'm');
  const flowMatch = flowRe.exec(flows.stdout);
  t.check(flowMatch !== null, `vmnat's flow table maps the guest's connection 10.0.2.15:* -> 10.0.2.2:${web.port} to the host socket 127.0.0.1:${held.remotePort} -> 127.0.0.1:${web.port}`, flows.stdout);
  const ss = await runHost(['ss', '-tnp', 'dst', `127.0.0.1:${web.port}`]);
  t.command('host$', `ss -tnp dst 127.0.0.1:${web.port}`, ss.stdout + ss.stderr);
  const ssLine = ss.stdout.split('\n').find((l) => l.includes(`127.0.0.1:${held.remotePort} `));
  t.check(ssLine !== undefined && ssLine.includes(`pid=${v.proc.child.pid},`), `the kernel shows that socket (port ${held.remotePort}) owned by vmnat's process (pid ${v.proc.child.pid}) — the netstat line of VBoxHeadless in the classic tutorial`, ss.stdout);
  held.release();
  const got = await guestSh(ctx, guest, 'wait $(cat /tmp/wget.pid); echo "wget exit $?"; sha256sum /tmp/index.html', 60_000);
  ctx.timings['fetch_ms'] = Math.round(performance.now() - fetched);
  t.check(/^wget exit 0$/m.test(got.output), 'wget finished without error');
  t.check(got.output.includes(`${sha256(page)}  /tmp/index.html`), `the guest's copy has the page's sha256 (${sha256(page).slice(0, 16)}…)`, got.output);
  await guestSh(ctx, guest, 'cat /tmp/index.html');

  // ── 7. a port forward into the guest ──
  t.step(`a port forward: host 127.0.0.1:${ctx.forwardPort === 0 ? 'PORT' : ctx.forwardPort} -> guest port 22`, `
    From the host, the guest's 10.0.2.15 is not reachable: it lives inside vmnat. A forward makes vmnat
    listen on a host port and carry each connection into the guest. First an SSH server in the guest:
    Debian's dropbear (-R: make host keys on first use; -s: keys only, no passwords).`);
  await guestSh(ctx, guest, 'dropbear -R -s -p 22');
  // dropbear forks into the background; it needs a moment to listen, longer under TCG: wait for it.
  const listening = await guestSh(ctx, guest, 'n=0; until netstat -tln | grep -q ":22 "; do [ $n -ge 100 ] && break; n=$((n+1)); sleep 0.1; done; netstat -tln');
  t.check(/:22\s.*LISTEN/.test(listening.output), 'the guest listens on port 22');
  const add = await ctl(ctx, v, ['forward', 'add', '--name', 'ssh', `tcp::${ctx.forwardPort}-:22`]);
  // With --port 0 the kernel picks the port and vmnat reports it in its answer.
  const added = /^added ssh: tcp 127\.0\.0\.1:(\d+) -> guest \(lease\):22$/m.exec(add.stdout);
  const fport = Number(added?.[1] ?? 0);
  t.check(add.code === 0 && added !== null && (ctx.forwardPort === 0 ? fport > 0 : fport === ctx.forwardPort), `vmnat added the forward at run time (no restart)`, add.stdout);
  const ls = await ctl(ctx, v, ['forward', 'ls']);
  t.check(new RegExp(`^ssh\\s+tcp\\s+127\\.0\\.0\\.1:${fport}\\s+\\(lease\\):22`, 'm').test(ls.stdout), 'forward ls lists it');

  t.note(`Now log in from the host. The lab made a key pair for this run ($LAB/id_ed25519) and put the public
    key in the guest's /root/.ssh/authorized_keys; the host key is new at every boot, so it is not recorded.`);
  const sshArgs = sshArgv(fport, key.privateKey);
  const connected = performance.now();
  const login = await runHost([...sshArgs, 'hostname; ip -4 -o addr show dev eth0; echo "SSH_CONNECTION=$SSH_CONNECTION"'], 90_000);
  ctx.timings['ssh_login_ms'] = Math.round(performance.now() - connected);
  t.command('host$', `${sshShown(ctx, fport)} 'hostname; ip -4 -o addr show dev eth0; echo "SSH_CONNECTION=$SSH_CONNECTION"'`, login.stdout + login.stderr);
  t.check(login.code === 0 && /^vmnat-lab$/m.test(login.stdout) && /inet 10\.0\.2\.15\/24 /.test(login.stdout), 'ssh through the forward logged in to the guest (10.0.2.15)', login.stdout + login.stderr);
  t.check(/^SSH_CONNECTION=10\.0\.2\.2 \d+ 10\.0\.2\.15 22$/m.test(login.stdout), 'and the guest\'s sshd saw the connection come from the gateway 10.0.2.2, as with VirtualBox');

  t.note('One more session, left open, to look at it from both sides:');
  const session = spawn(sshArgs[0]!, [...sshArgs.slice(1), 'echo session open; exec sleep 120'], { stdio: ['ignore', 'pipe', 'pipe'] });
  ctx.cleanup.add('ssh session', () => {
    session.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`the ssh session did not open within 60 s: ${text}`)), 60_000);
    session.stdout.setEncoding('utf8').on('data', (d: string) => {
      text += d;
      if (text.includes('session open')) {
        clearTimeout(timer);
        resolve();
      }
    });
    session.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`ssh exited (${code}) before the session opened: ${text}`));
    });
  });
  t.command('host$', `${sshShown(ctx, fport)} 'echo session open; exec sleep 120' &`, 'session open');
  const hss = await runHost(['ss', '-tnp', 'dst', `127.0.0.1:${fport}`]);
  t.command('host$', `ss -tnp dst 127.0.0.1:${fport}`, hss.stdout + hss.stderr);
  const clientPort = new RegExp(`127\\.0\\.0\\.1:(\\d+)\\s+127\\.0\\.0\\.1:${fport}\\s+users:\\(\\("ssh",pid=${session.pid},`).exec(hss.stdout)?.[1];
  t.check(clientPort !== undefined, `the host's ssh (pid ${session.pid}) is connected to 127.0.0.1:${fport}`, hss.stdout);
  const fflows = await ctl(ctx, v, ['flows']);
  t.check(
    new RegExp(`^tcp\\s+10\\.0\\.2\\.15:22\\s+10\\.0\\.2\\.2:\\d+\\s+ssh\\s+established\\b.*\\s127\\.0\\.0\\.1:${fport} <- 127\\.0\\.0\\.1:${clientPort}$`, 'm').test(fflows.stdout),
    `vmnat's flow table: that host connection (from port ${clientPort}) is the guest's 10.0.2.2:* -> 10.0.2.15:22`,
    fflows.stdout,
  );
  const gss = await guestSh(ctx, guest, 'netstat -tn | grep ":22 "');
  t.check(/10\.0\.2\.15:22\s+10\.0\.2\.2:\d+\s+ESTABLISHED/.test(gss.output), 'inside the guest: an established connection from 10.0.2.2 to port 22');

  // ── 8. the picture ──
  t.step('what this lab built', `
    Drawn from vmnat's API (GET /config, /leases, /forwards, /flows) while the ssh session is open.`);
  const svg = await drawTopology(ctx, v, 'nat');
  t.check(svg.endsWith('.svg'), `topology written to ${svg}`);
  session.kill('SIGTERM');
}
