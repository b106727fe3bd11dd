/**
 * `vmnat [flags] -- COMMAND ARGS…`: run the VM as our child, wired to us by a datagram socketpair.
 *
 * Theory of operation: we make a socketpair, start COMMAND with the other end as its fd 4 (the
 * convention of vfkit/krunkit-style `fd=4` options; stdin/stdout/stderr pass through, fd 3 is
 * closed), close our copy of that end, and adopt ours as an `fd` link. Both ends are created
 * close-on-exec, so nothing but the intended descriptor reaches the child (spawn dup2()s it into
 * place, which clears the flag there). The child's end is made blocking: programs handed a socket
 * expect that. The promise settles when the child has started (or failed to: e.g. ENOENT), so the
 * caller gets one clear error instead of an 'error' event later. The CLI exits with the child's
 * status: it listens for the child's 'exit'.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { loadNative, type NativeAddon } from './native.ts';
import { FdLink } from './fd.ts';
import type { LinkOptions } from './native-link.ts';
import { systemError } from './errors.ts';

export interface SpawnOptions extends LinkOptions {
  /** The child's descriptor number for its end of the socketpair. Default 4. */
  childFd?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface SpawnedGuest {
  /** Our end, as a link of kind 'fd' (not started). */
  link: FdLink;
  child: ChildProcess;
}

export async function spawnWithSocketpair(
  command: readonly string[],
  options: SpawnOptions = {},
  native: NativeAddon = loadNative(),
): Promise<SpawnedGuest> {
  const prepared = prepareSpawnWithSocketpair(command, options, native);
  const child = await prepared.start();
  return { link: prepared.link, child };
}

export interface PreparedSpawn {
  /** Our end, as a link of kind 'fd' (not started). Usable before the child exists. */
  link: FdLink;
  /** Starts COMMAND with the other end as its `childFd`; settles once it has started (or failed to). */
  start(): Promise<ChildProcess>;
}

/**
 * The socketpair and our link now, the child later: the CLI attaches the engine and prints its
 * ready line first, so the child's output never comes before it and no frame of the child's waits
 * for an engine.
 */
export function prepareSpawnWithSocketpair(
  command: readonly string[],
  options: SpawnOptions = {},
  native: NativeAddon = loadNative(),
): PreparedSpawn {
  const [file, ...args] = command;
  if (file === undefined || file === '') throw new Error('spawnWithSocketpair: empty command');
  const childFd = options.childFd ?? 4;
  if (!Number.isInteger(childFd) || childFd < 3) throw new Error(`spawnWithSocketpair: childFd must be ≥ 3 (got ${childFd})`);

  let ours: number;
  let theirs: number;
  try {
    [ours, theirs] = native.socketpairDgram();
  } catch (err) {
    throw systemError('socketpair', err);
  }
  let link: FdLink;
  try {
    link = FdLink.adopt(ours, options, native);
  } catch (err) {
    native.closeFd(ours);
    native.closeFd(theirs);
    throw err;
  }
  const start = async (): Promise<ChildProcess> => {
    let child: ChildProcess;
    try {
      native.setNonblocking(theirs, false);
      const stdio: StdioOptions = ['inherit', 'inherit', 'inherit'];
      while (stdio.length < childFd) stdio.push('ignore');
      stdio.push(theirs);
      child = spawn(file, args, { stdio, env: options.env ?? process.env, cwd: options.cwd });
    } catch (err) {
      native.closeFd(theirs);
      await link.close();
      throw systemError(`spawn ${file}`, err);
    }
    // The child has its own copy now (or never will): ours must go, or the child's exit would not
    // be visible as ECONNREFUSED on our end.
    native.closeFd(theirs);
    try {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error): void => reject(err);
        child.once('error', onError);
        child.once('spawn', () => {
          child.off('error', onError);
          resolve();
        });
      });
    } catch (err) {
      await link.close();
      throw systemError(`spawn ${file}`, err);
    }
    return child;
  };
  return { link, start };
}
