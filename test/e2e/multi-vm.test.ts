/**
 * Two real VMs (qemu, TCG) on one vmnat: each leases its own address and they talk to each other
 * — once with each VM on its own `--socket` path (qemu `-netdev dgram`), once with both VMs
 * connected to one `--stream` path (every connection is a switch port of its own).
 *
 * Both VMs of a test run at once (they must meet); the tests run one after the other (TCG is
 * CPU-bound on this 2-core machine). The VMs get fixed addresses by `--dhcp-static`, so each
 * knows the other's: A listens with nc, B pings A until it answers and then sends A a line.
 */
import { rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { describeRun, ensureGuest, makeRunDir, runVm, uniqueMac } from '../helpers/vm.ts';
import { startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { startTestDns, type TestDns } from '../helpers/dnsserver.ts';

const VM_RUN_MS = 90_000;
const A_IP = '10.0.2.21';
const B_IP = '10.0.2.22';

const dirs: string[] = [];
let engine: VmnatProcess | undefined;
let dns: TestDns | undefined;

const SCRIPT_A = `
  vmnat_lease || exit 1
  msg=$(timeout 60 nc -l -p 7777 | tr -d '\\n')
  vmnat_result "got=$msg"
`;
const SCRIPT_B = `
  vmnat_lease || exit 1
  i=0
  until ping -c 1 -W 1 ${A_IP} >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -ge 40 ] && break; sleep 1
  done
  vmnat_ping ${A_IP} 2 ping_a
  sleep 1
  echo hello-from-b | timeout 10 nc ${A_IP} 7777
  vmnat_result "sent=$?"
`;

async function pair(netdevA: string, netdevB: string, portsOutliveVms: boolean): Promise<void> {
  const [ra, rb] = await Promise.all([
    runVm({ netdev: netdevA, mac: macA, script: SCRIPT_A, timeoutMs: VM_RUN_MS }),
    runVm({ netdev: netdevB, mac: macB, script: SCRIPT_B, timeoutMs: VM_RUN_MS }),
  ]);
  const why = `A:\n${describeRun(ra)}\nB:\n${describeRun(rb)}\nvmnat:\n${engine?.stderr()}`;
  expect(ra.results, why).toMatchObject({ lease: 'ok', ip: A_IP, got: 'hello-from-b' });
  expect(rb.results, why).toMatchObject({ lease: 'ok', ip: B_IP, ping_a: 'ok', sent: '0' });
  const stats = (await engine!.stats()) as { ports: { ip: string | null }[]; switch: { guestToGuest: number } };
  expect(stats.switch.guestToGuest).toBeGreaterThan(0);
  // A socket's port outlives its VM; a stream connection's port goes with it.
  if (portsOutliveVms) expect(stats.ports.map((p) => p.ip)).toEqual(expect.arrayContaining([A_IP, B_IP]));
  else expect(stats.ports).toEqual([]);
}

const macA = uniqueMac();
const macB = uniqueMac();

describe.sequential('two VMs on one vmnat', () => {
  beforeAll(async () => {
    ensureGuest();
    dns = await startTestDns({});
  }, 600_000);
  afterEach(async () => {
    await engine?.stop();
    engine = undefined;
  });
  afterAll(async () => {
    await dns?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const common = () => ['--dns-server', `127.0.0.1:${dns!.port}`, '--dhcp-static', `${macA}=${A_IP}`, '--dhcp-static', `${macB}=${B_IP}`];

  it('each over its own --socket: distinct leases, B pings A and sends it a line', async () => {
    const dir = makeRunDir('2vm-sock');
    dirs.push(dir);
    engine = await startVmnat(['--socket', `${dir}/a.sock`, '--socket', `${dir}/b.sock`, ...common()]);
    await pair(
      `dgram,id=n0,local.type=unix,local.path=${dir}/qa.sock,remote.type=unix,remote.path=${dir}/a.sock`,
      `dgram,id=n0,local.type=unix,local.path=${dir}/qb.sock,remote.type=unix,remote.path=${dir}/b.sock`,
      true,
    );
  }, VM_RUN_MS + 30_000);

  it('both on one --stream path: each connection is its own port', async () => {
    const dir = makeRunDir('2vm-strm');
    dirs.push(dir);
    engine = await startVmnat(['--stream', `${dir}/net.sock`, ...common()]);
    const netdev = `stream,id=n0,server=off,addr.type=unix,addr.path=${dir}/net.sock`;
    await pair(netdev, netdev, false);
  }, VM_RUN_MS + 30_000);
});
