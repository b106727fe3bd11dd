/**
 * Typed errors for opening links.
 *
 * Theory of operation: opening a link fails for reasons a user can fix (a path another vmnat or VM
 * still serves, a path that is a regular file, an inherited fd of the wrong kind). Each gets a
 * stable `code` the CLI maps to an exit status and one clear line. System errors from the addon
 * or from Node keep their errno `code` (`EACCES`, `ENOENT`, `EPERM`, …) and are wrapped with the
 * link they concern.
 */

export type LinkErrorCode =
  /** A live process serves the socket path (CLI: exit 2). */
  | 'EADDRINUSE_LIVE'
  /** The path exists and is not a socket: we refuse to delete it. */
  | 'EPATH_NOT_SOCKET'
  /** An inherited fd that is not a datagram socket. */
  | 'EFD_TYPE'
  /** A system call failed; `cause` holds the errno error. */
  | 'ESYSTEM'
  /** A running link failed (TAP deleted, socketpair peer gone). */
  | 'ELINK_FAILED';

export class LinkError extends Error {
  override readonly name = 'LinkError';
  readonly code: LinkErrorCode;
  /** The errno name behind it, when there is one (`EACCES`, `ECONNREFUSED`, …). */
  readonly errno: string | undefined;

  constructor(code: LinkErrorCode, message: string, options?: { cause?: unknown; errno?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.errno = options?.errno;
  }
}

/** The errno name of a Node or addon error, if it has one. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** Wraps a system error from opening `what` into a LinkError with one readable line. */
export function systemError(what: string, err: unknown): LinkError {
  if (err instanceof LinkError) return err;
  const errno = errnoCode(err);
  const detail = err instanceof Error ? err.message : String(err);
  return new LinkError('ESYSTEM', `${what}: ${detail}`, { cause: err, errno });
}
