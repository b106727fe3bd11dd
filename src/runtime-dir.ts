/**
 * Where vmnat puts its socket files, and the checks that keep other local users out of them.
 *
 * Theory of operation: a unix socket is only as private as the directory it lives in. Whoever can
 * write that directory can unlink vmnat's `net.sock` and bind their own, and then sit between the
 * next VM and vmnat. So:
 *  - The default runtime directory is `$XDG_RUNTIME_DIR/vmnat` (a per-user 0700 tmpfs on systemd
 *    systems), else `$TMPDIR/vmnat-$UID`. It must be ours: created here with mode 0700 (one level:
 *    its parent must exist), or, if it exists, a real directory (not a symlink) owned by us with
 *    mode exactly 0700. Anything else is refused with one line naming it — never chmod()ed or
 *    chown()ed by path, which a symlink swapped in between would redirect.
 *  - The parent of a path the user gave (`--socket`, `--stream`, `--api-socket`) is created if
 *    missing (0700, as qemu's and vfkit's examples expect); it and the directories above it must
 *    be changeable only by us or root: owned by us or root, and not writable by group or others
 *    unless sticky (as /tmp is). Symlinks are followed: the user named the path.
 * Socket files themselves are created under umask 077 (cli.ts), so they are born 0600.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A directory vmnat refuses to use; `message` is one line naming it and why. */
export class RuntimeDirError extends Error {
  readonly code = 'VMNAT_UNSAFE_DIR';
}

/** The default runtime directory for this user. */
export function defaultRuntimeDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env['XDG_RUNTIME_DIR'];
  if (xdg !== undefined && path.isAbsolute(xdg)) return path.join(xdg, 'vmnat');
  return path.join(os.tmpdir(), `vmnat-${myUid()}`);
}

function myUid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

function modeText(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/**
 * Makes sure `dir` is a private directory of ours: creates it 0700 if missing, else checks that
 * it is a real directory, owned by us, mode 0700. Throws RuntimeDirError otherwise.
 */
export function ensurePrivateDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST') throw new RuntimeDirError(`runtime directory ${dir}: cannot create it (${code ?? String(err)})`);
  }
  const st = fs.lstatSync(dir);
  const uid = myUid();
  if (st.isSymbolicLink()) throw new RuntimeDirError(`runtime directory ${dir} is a symlink; refusing to use it (remove it, or pass --socket PATH)`);
  if (!st.isDirectory()) throw new RuntimeDirError(`runtime directory ${dir} is not a directory; refusing to use it`);
  if (st.uid !== uid) throw new RuntimeDirError(`runtime directory ${dir} belongs to uid ${st.uid}, not to us (uid ${uid}); refusing to use it (remove it, or pass --socket PATH)`);
  if ((st.mode & 0o7777) !== 0o700) throw new RuntimeDirError(`runtime directory ${dir} has mode ${modeText(st.mode)}, not 0700; refusing to use it (chmod 700 it, or remove it)`);
}

/**
 * The directory that will hold a socket file the user named: created (0700) if missing; then it
 * and every directory above it must be changeable only by us or root — owned by us or root, and
 * not writable by group or others unless sticky (as /tmp is) — since whoever can write a directory
 * on the way can swap what lies below it. Symlinks on the way are followed (the user named the
 * path) and their targets checked. `alsoTrusted`: the user vmnat will become (privileges.ts), who
 * may own them too. The caller prefixes the message with its flag.
 */
export function checkSocketParent(socketPath: string, alsoTrusted?: number): void {
  const dir = path.dirname(socketPath);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST') throw new RuntimeDirError(`cannot create the directory ${dir} (${code ?? String(err)})`);
  }
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch (err) {
    throw new RuntimeDirError(`${dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const uid = myUid();
  for (let d = real; ; d = path.dirname(d)) {
    const st = fs.statSync(d);
    const shown = d === real ? dir : d;
    if (!st.isDirectory()) throw new RuntimeDirError(`${shown} is not a directory`);
    if (st.uid !== uid && st.uid !== 0 && st.uid !== alsoTrusted) throw new RuntimeDirError(`directory ${shown} belongs to uid ${st.uid}, who could replace the socket; refusing to use it`);
    const sticky = (st.mode & 0o1000) !== 0;
    if ((st.mode & 0o022) !== 0 && !sticky) throw new RuntimeDirError(`directory ${shown} has mode ${modeText(st.mode)}: others could replace the socket; refusing to use it`);
    if (d === path.dirname(d)) break;
  }
}
