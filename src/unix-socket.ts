/**
 * Listening on a unix socket path that the user named: the control API (`--api-socket`) and
 * forwards whose host side is a socket file (`--hostfwd unix:/path-:2375`).
 *
 * Theory of operation: a path that already exists is looked at before anything is bound. A socket
 * file nobody accepts on (ECONNREFUSED: its process died) is stale and replaced; one that accepts
 * is live and refused (`EADDRINUSE_LIVE`), as is one that is slow to answer (never delete a socket
 * we are unsure of); a path that is not a socket is never deleted (`EPATH_NOT_SOCKET`). The bind
 * happens synchronously inside `server.listen()`, so it runs under umask 177: the file is born
 * 0600 and there is no moment when others may connect, and no chmod by path afterwards (which a
 * file swapped in meanwhile would redirect). Whoever closes the server removes the file only if it
 * is still the one bound (`fileIdentity`), not one another process put there since.
 */
import fs from 'node:fs';
import net from 'node:net';
import { fileIdentity } from './link/socket.ts';

export { fileIdentity };

/** The longest path a unix socket address holds (sun_path is 108 bytes with its NUL). */
export const MAX_UNIX_PATH_BYTES = 107;

export type UnixSocketErrorCode = 'EADDRINUSE_LIVE' | 'EPATH_NOT_SOCKET' | 'ESYSTEM';

/** The path cannot be listened on; `message` is one line naming it. */
export class UnixSocketError extends Error {
  override readonly name = 'UnixSocketError';
  constructor(
    readonly code: UnixSocketErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** PATH exists? Replace it if it is a socket nobody accepts on; refuse otherwise. */
export async function replaceStaleSocket(p: string, liveHint = 'another vmnat?'): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new UnixSocketError('ESYSTEM', `${p}: ${(err as Error).message}`, { cause: err });
  }
  if (!st.isSocket()) throw new UnixSocketError('EPATH_NOT_SOCKET', `${p} exists and is not a socket; refusing to replace it`);
  if (await isLive(p)) throw new UnixSocketError('EADDRINUSE_LIVE', `${p} is in use by a running process (${liveHint})`);
  try {
    fs.unlinkSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new UnixSocketError('ESYSTEM', `${p}: ${(err as Error).message}`, { cause: err });
  }
}

/** Does a process accept connections on the socket file `p`? (Unsure counts as yes.) */
export function isLive(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(p);
    const timer = setTimeout(() => {
      s.destroy();
      resolve(true); // slow to accept is still alive: never delete a socket we are unsure of
    }, 1000);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(true);
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      // ECONNREFUSED: a socket file nobody listens on. Other errors (EACCES…) mean "unsure".
      resolve(!(err.code === 'ECONNREFUSED' || err.code === 'ENOENT'));
    });
  });
}

/**
 * Binds `server` to `p` under umask 177 (born 0600) and resolves once it listens. A bind that
 * loses a race with another process is `EADDRINUSE_LIVE`. Returns the file's identity.
 */
export function listenPrivate(server: net.Server, p: string): Promise<string | undefined> {
  return new Promise<string | undefined>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        err.code === 'EADDRINUSE'
          ? new UnixSocketError('EADDRINUSE_LIVE', `${p} was bound by another process meanwhile`, { cause: err })
          : new UnixSocketError('ESYSTEM', `${p}: ${err.message}`, { cause: err }),
      );
    };
    server.once('error', onError);
    let oldMask: number;
    try {
      oldMask = process.umask(0o177);
    } catch (err) {
      server.off('error', onError);
      reject(new UnixSocketError('ESYSTEM', `${p}: cannot set the umask here (a worker thread?): ${(err as Error).message}`, { cause: err }));
      return;
    }
    try {
      server.listen(p, () => {
        server.off('error', onError);
        resolve(fileIdentity(p));
      });
    } finally {
      process.umask(oldMask);
    }
  });
}
