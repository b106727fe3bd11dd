/**
 * Network boot with a real firmware: qemu's own iPXE ROM (Debian ipxe-qemu, pxe-virtio.rom) boots
 * the test guest from vmnat's TFTP server over --socket, as a user of `--tftp DIR --bootfile NAME`
 * would: no -kernel, no -initrd, `-boot n`.
 *
 * The chain: SeaBIOS runs the NIC's ROM → iPXE does DHCP with vmnat (the OFFER names boot.ipxe in
 * the BOOTP file field, option 67, siaddr = 10.0.2.2) → iPXE fetches boot.ipxe over TFTP, sees
 * `#!ipxe`, runs it → `kernel` and `initrd` over tftp://10.0.2.2/ → `boot` → Linux boots, loads
 * virtio-net, leases again with busybox udhcpc (same MAC: the same 10.0.2.15) and fetches a file
 * from a host-loopback HTTP server through the gateway.
 *
 * The kernel is the bzImage (iPXE boots Linux through its boot protocol; the ELF vmlinux of the
 * other VM tests is qemu -kernel's fast path only). The command line carries a marker the guest
 * reads back from /proc/cmdline: proof that it is the script's kernel line that booted.
 *
 * The TFTP transfers are timed from vmnat's own trace (NODE_DEBUG=vmnat-tftp: a line per read
 * request and per finished transfer), on the host clock, and printed for the record.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GUEST_CMDLINE,
  IPXE_ROM_DIR,
  describeRun,
  ensureGuest,
  guestInitrd,
  makeRunDir,
  runVm,
  startHttpServer,
  startVmnat,
} from '../helpers/vm.ts';
import { startTestDns } from '../helpers/dnsserver.ts';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe.sequential('network boot: qemu\'s iPXE ROM boots the guest from vmnat --tftp', () => {
  beforeAll(() => {
    ensureGuest();
  }, 600_000);

  it('DHCP names boot.ipxe, iPXE loads kernel and initrd over TFTP, the booted guest leases and fetches', async () => {
    expect(existsSync(path.join(IPXE_ROM_DIR, 'pxe-virtio.rom')), `qemu's iPXE ROMs (apt-get install ipxe-qemu: scripts/install-test-deps.sh)`).toBe(true);
    const { vmlinuz } = ensureGuest();
    const dir = makeRunDir('pxe');
    dirs.push(dir);
    const tftpDir = path.join(dir, 'tftp');
    const blob = createHash('sha256').update('netboot').digest();
    const http = await startHttpServer({ '/after-boot': blob });
    const dns = await startTestDns({});
    const script = `
      vmnat_result "cmdline_boot=$(tr ' ' '\\n' </proc/cmdline | sed -n 's/^vmnat.boot=//p')"
      vmnat_lease || exit 1
      vmnat_fetch http://10.0.2.2:${http.port}/after-boot 30 fetch
    `;
    mkdirSync(tftpDir);
    copyFileSync(vmlinuz, path.join(tftpDir, 'vmlinuz'));
    writeFileSync(path.join(tftpDir, 'initrd.cpio'), guestInitrd(script));
    // What iPXE 1.0.0+git-20190125 understands: a script (#!ipxe), tftp:// URIs, kernel/initrd/boot.
    writeFileSync(path.join(tftpDir, 'boot.ipxe'), [
      '#!ipxe',
      `kernel tftp://10.0.2.2/vmlinuz ${GUEST_CMDLINE} vmnat.boot=ipxe`,
      'initrd tftp://10.0.2.2/initrd.cpio',
      'boot',
      '',
    ].join('\n'));

    // Host-clock times of vmnat's TFTP trace lines, in order.
    const trace: Array<{ at: number; line: string }> = [];
    let partial = '';
    const onStderr = (chunk: string): void => {
      const at = performance.now();
      partial += chunk;
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        if (line.includes('VMNAT-TFTP')) trace.push({ at, line });
      }
    };
    const enginePath = path.join(dir, 'engine.sock');
    const engine = await startVmnat(
      ['--socket', enginePath, '--tftp', tftpDir, '--bootfile', 'boot.ipxe', '--dns-server', `127.0.0.1:${dns.port}`],
      { env: { ...process.env, NODE_DEBUG: 'vmnat-tftp' }, onStderr },
    );
    try {
      const started = performance.now();
      const r = await runVm({
        netboot: true,
        netdev: `dgram,id=n0,local.type=unix,local.path=${dir}/qemu.sock,remote.type=unix,remote.path=${enginePath}`,
        script: '',
        timeoutMs: 150_000,
      });
      const why = `${describeRun(r)}\n--- vmnat ---\n${engine.stderr()}`;
      expect(r.timedOut, why).toBe(false);
      expect(r.results, why).toMatchObject({
        cmdline_boot: 'ipxe',
        eth0: 'up',
        lease: 'ok',
        ip: '10.0.2.15',
        mask: '24',
        router: '10.0.2.2',
        fetch: 'ok',
        fetch_bytes: String(blob.length),
        fetch_md5: createHash('md5').update(blob).digest('hex'),
        done: '0',
      });
      expect(http.hits).toBe(1);

      // The three read requests in the script's order, each completed.
      const rrqs = trace.filter((t) => t.line.includes('RRQ'));
      expect(rrqs.map((t) => /RRQ (\S+)/.exec(t.line)?.[1]), engine.stderr()).toEqual(['boot.ipxe', 'vmlinuz', 'initrd.cpio']);
      // iPXE asks for blksize 1432 and tsize; vmnat grants blksize (the iPXE of 2019 has no windowsize).
      expect(rrqs[1]!.line).toMatch(/blksize 1432 windowsize 1/);
      const done = trace.filter((t) => /transfer on port \d+ done/.test(t.line));
      expect(done).toHaveLength(3);
      const kernelMs = Math.round(done[1]!.at - rrqs[1]!.at);
      const initrdMs = Math.round(done[2]!.at - rrqs[2]!.at);
      const bytes = rrqs.slice(1).reduce((n, t) => n + Number(/\((\d+) bytes\)/.exec(t.line)?.[1] ?? 0), 0);
      console.log(
        `[netboot] first RRQ ${Math.round(rrqs[0]!.at - started)} ms after qemu start; ` +
          `TFTP vmlinuz ${kernelMs} ms, initrd ${initrdMs} ms (${(bytes / 1e6).toFixed(1)} MB, ` +
          `${((bytes * 8) / 1e6 / ((done[2]!.at - rrqs[1]!.at) / 1000)).toFixed(0)} Mbit/s); ` +
          `guest lease ${r.timesMs['lease']} ms, exit ${r.durationMs} ms`,
      );
      const how = await engine.stop();
      expect(how, engine.stderr()).toEqual({ code: 0, signal: null });
    } finally {
      await engine.stop('SIGKILL');
      await http.close();
      await dns.close();
    }
  }, 240_000);
});
