/**
 * A DISCOVER flood from random MACs over `--socket` (crafted frames), on a /8: vmnat's DHCP holds
 * at most 1,024 offers however big the prefix (it used to make an offer — and a record — per MAC,
 * scanning every address handed out so far for each), and a real client still leases afterwards.
 */
import { afterAll, expect, test } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { killAll, sleep, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { CraftedGuest } from '../helpers/craftedguest.ts';
import { dhcpDiscover, eth, ipv4, udp } from '../helpers/fuzzframes.ts';

let vmnat: VmnatProcess | undefined;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmnat-dhcpflood-${process.pid}-`));
afterAll(async () => {
  await vmnat?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  killAll();
});

const BCAST = [255, 255, 255, 255, 255, 255];
const discoverFrame = (mac: number[], xid: number): Uint8Array =>
  eth(BCAST, mac, 0x0800, ipv4(17, [0, 0, 0, 0], [255, 255, 255, 255], udp([0, 0, 0, 0], [255, 255, 255, 255], 68, 67, dhcpDiscover(mac, xid))));

test('20,000 DISCOVERs from random MACs on --net 10.0.0.0/8: at most 1,024 offers held; a new client still gets one', async () => {
  const sock = path.join(dir, 'net.sock');
  vmnat = await startVmnat(['--socket', sock, '--net', '10.0.0.0/8', '--anti-spoof', 'off', '--api-socket', path.join(dir, 'api.sock')]);
  const guest = new CraftedGuest(dir, sock);
  try {
    const FLOOD = 20_000;
    for (let i = 0; i < FLOOD; i += 500) {
      const batch: Uint8Array[] = [];
      for (let k = i; k < i + 500; k++) batch.push(discoverFrame([0x02, 0x5e, (k >> 16) & 0xff, (k >> 8) & 0xff, k & 0xff, 0x01], k));
      guest.send(...batch);
      await sleep(5);
    }
    // Some datagrams are lost on the unix socket when the machine is busy: wait until the count
    // settles, and ask for far more DISCOVERs than the offer cap.
    const stats = async () => ((await vmnat!.stats()) as { dhcp: Record<string, number> }).dhcp;
    let seen = -1;
    for (let i = 0; i < 50; i++) {
      const now = (await stats())['discover'] ?? 0;
      if (now === seen) break;
      seen = now;
      await sleep(200);
    }
    const d = await stats();
    expect(d['discover']).toBeGreaterThan(5 * 1024);
    const leases = await fetchLeases(path.join(dir, 'api.sock'));
    console.log(`DISCOVERs handled: ${d['discover']}, offers: ${d['offer']}, reclaimed: ${d['offersReclaimed']}, leases held now: ${leases}`);
    expect(leases).toBeLessThanOrEqual(1024);
    guest.clear();
    guest.send(discoverFrame([0x52, 0x54, 0, 0x12, 0x34, 0x99], 0xabcd));
    await guest.waitFor((fs) => fs.some((f) => f.proto === 17 && f.l4 !== undefined && f.l4.length > 8 + 240 && f.l4[8 + 236 + 6] === 2), 'an OFFER for the new client');
  } finally {
    guest.close();
  }
});

async function fetchLeases(apiSock: string): Promise<number> {
  const http = await import('node:http');
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath: apiSock, path: '/leases' }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve((JSON.parse(body) as unknown[]).length));
      })
      .on('error', reject);
  });
}
