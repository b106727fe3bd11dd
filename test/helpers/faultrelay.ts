/**
 * A fault-injecting relay between a guest's TAP (in a network namespace) and vmnat's `--socket`:
 * the kernel has no netem here, so loss, reordering and duplication are put in by this process,
 * seeded so a failure replays.
 *
 * Usage: node --import tsx test/helpers/faultrelay.ts TAP NETNS_PATH VMNAT_SOCKET MY_SOCKET SEED LOSS REORDER DUP
 * (rates as fractions, applied to each direction independently). Prints "ready" when both ends are
 * open, and its counts as JSON on SIGTERM.
 */
import { openLink } from '../../src/link/index.ts';
import { loadNative } from '../../src/link/native.ts';
import type { Link } from '../../src/link/types.ts';
import { prng } from './fuzzframes.ts';

const [tap, netns, vmnatPath, myPath, seedText, lossText, reorderText, dupText] = process.argv.slice(2);
const seed = Number(seedText);
const loss = Number(lossText);
const reorder = Number(reorderText);
const dup = Number(dupText);

const native = loadNative();
const fd = native.unixDgramBind(myPath!);
native.unixDgramConnect(fd, vmnatPath!);
const toVmnat = await openLink({ kind: 'fd', fd });
const toGuest = await openLink({ kind: 'tap', name: tap!, netnsPath: netns! });

const counts = { relayed: 0, dropped: 0, reordered: 0, duplicated: 0 };

function relay(from: Link, to: Link, rand: () => number): void {
  let held: Uint8Array | undefined;
  let timer: NodeJS.Timeout | undefined;
  const release = () => {
    timer = undefined;
    if (held !== undefined) {
      to.send(held);
      to.flush();
      held = undefined;
    }
  };
  from.start((frames) => {
    for (const frame of frames) {
      if (rand() < loss) {
        counts.dropped++;
        continue;
      }
      counts.relayed++;
      if (rand() < dup) {
        counts.duplicated++;
        to.send(frame);
      }
      if (held === undefined && rand() < reorder) {
        // Hold this frame back until the next one has gone (or 2 ms pass): a swap of neighbours.
        counts.reordered++;
        held = Uint8Array.from(frame);
        timer = setTimeout(release, 2);
        continue;
      }
      to.send(frame);
      if (held !== undefined) {
        clearTimeout(timer);
        to.send(held);
        held = undefined;
      }
    }
    to.flush();
  });
}

relay(toGuest, toVmnat, prng(seed));
relay(toVmnat, toGuest, prng(seed ^ 0x9e3779b9));
process.on('SIGTERM', async () => {
  process.stdout.write(JSON.stringify(counts) + '\n');
  await toVmnat.close();
  await toGuest.close();
  process.exit(0);
});
process.stdout.write('ready\n');
