/**
 * A small client for the control API (src/api/server.ts) over its unix socket, used by
 * `vmnat ctl` and the tests.
 *
 * Theory of operation: one `node:http` request per call on a fresh connection (no agent: the
 * socket is local, and a CLI should not keep the process alive with pooled sockets). A non-2xx
 * answer becomes `ApiError` carrying the server's one-line `error` and `code`; failing to reach
 * the socket becomes `ApiUnreachableError` with the errno. Requests time out (default 10 s);
 * `events()` has no timeout and ends when the server ends the stream or the signal aborts.
 */
import http from 'node:http';
import type { ApiEvent, ApiFlow, ApiLease, ApiPort } from './server.ts';
import type { ForwardRuleJson } from '../portfwd/rules.ts';
import type { FilterJson } from '../filter/filter.ts';

/** A rule as `GET /forwards` lists it. */
export interface ForwardListItem extends ForwardRuleJson {
  tcp_accepted: number;
  tcp_active: number;
  udp_flows: number;
}

/** One line of GET /events: a lease, forward, flow or filter event, stamped with its ISO time. */
export type VmnatEvent = ApiEvent & { time: string };

/** The API answered with an error status. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The API socket could not be reached (no such file, nobody listening, permission). */
export class ApiUnreachableError extends Error {
  override readonly name = 'ApiUnreachableError';
  constructor(
    readonly socketPath: string,
    readonly errno: string,
    message: string,
  ) {
    super(message);
  }
}

export interface ApiResponse {
  status: number;
  body: unknown;
}

export class ApiClient {
  private readonly timeoutMs: number;

  constructor(
    readonly socketPath: string,
    options: { timeoutMs?: number } = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** One request; resolves with any status (parsed JSON body, or undefined when empty). */
  request(method: string, urlPath: string, body?: unknown): Promise<ApiResponse> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const headers: http.OutgoingHttpHeaders = { Host: 'vmnat', Accept: 'application/json' };
      if (payload !== undefined) {
        headers['Content-Type'] = 'application/json';
        headers['Content-Length'] = payload.length;
      }
      const req = http.request({ socketPath: this.socketPath, path: urlPath, method, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('error', reject);
        res.once('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text.trim() === '' ? undefined : JSON.parse(text);
          } catch {
            parsed = text;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      });
      req.setTimeout(this.timeoutMs, () => req.destroy(Object.assign(new Error(`no answer within ${this.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
      req.once('error', (err: NodeJS.ErrnoException) => reject(this.unreachable(err)));
      req.end(payload);
    });
  }

  /** Like `request` but a non-2xx status throws ApiError. */
  async call(method: string, urlPath: string, body?: unknown): Promise<unknown> {
    const r = await this.request(method, urlPath, body);
    if (r.status >= 200 && r.status < 300) return r.body;
    const b = (typeof r.body === 'object' && r.body !== null ? r.body : {}) as { error?: unknown; code?: unknown };
    const message = typeof b.error === 'string' ? b.error : `HTTP ${r.status}`;
    throw new ApiError(r.status, typeof b.code === 'string' ? b.code : String(r.status), message);
  }

  health(): Promise<Record<string, unknown>> {
    return this.call('GET', '/health') as Promise<Record<string, unknown>>;
  }
  forwards(): Promise<ForwardListItem[]> {
    return this.call('GET', '/forwards') as Promise<ForwardListItem[]>;
  }
  addForward(rule: Partial<ForwardRuleJson>): Promise<ForwardListItem> {
    return this.call('POST', '/forwards', rule) as Promise<ForwardListItem>;
  }
  async removeForward(name: string): Promise<void> {
    await this.call('DELETE', `/forwards/${encodeURIComponent(name)}`);
  }
  leases(): Promise<ApiLease[]> {
    return this.call('GET', '/leases') as Promise<ApiLease[]>;
  }
  flows(): Promise<ApiFlow[]> {
    return this.call('GET', '/flows') as Promise<ApiFlow[]>;
  }
  ports(): Promise<ApiPort[]> {
    return this.call('GET', '/ports') as Promise<ApiPort[]>;
  }
  stats(): Promise<Record<string, unknown>> {
    return this.call('GET', '/stats') as Promise<Record<string, unknown>>;
  }
  config(): Promise<Record<string, unknown>> {
    return this.call('GET', '/config') as Promise<Record<string, unknown>>;
  }
  filter(): Promise<FilterJson> {
    return this.call('GET', '/filter') as Promise<FilterJson>;
  }
  /** Replaces the filter rules; `source` names them in error messages (a file name). */
  setFilter(rules: string, source?: string): Promise<FilterJson> {
    return this.call('PUT', '/filter', source === undefined ? { rules } : { rules, source }) as Promise<FilterJson>;
  }

  /**
   * Follows GET /events: `onLine` gets each line's text and its parsed object. Resolves when the
   * server ends the stream or `signal` aborts.
   */
  events(onEvent: (event: Record<string, unknown>, line: string) => void, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: this.socketPath, path: '/events', method: 'GET', headers: { Host: 'vmnat' }, agent: false }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new ApiError(res.statusCode ?? 0, String(res.statusCode), `GET /events answered HTTP ${res.statusCode}`));
          return;
        }
        res.setEncoding('utf8');
        let buffered = '';
        res.on('data', (chunk: string) => {
          buffered += chunk;
          let nl: number;
          while ((nl = buffered.indexOf('\n')) >= 0) {
            const line = buffered.slice(0, nl);
            buffered = buffered.slice(nl + 1);
            if (line.trim() === '') continue;
            try {
              onEvent(JSON.parse(line) as Record<string, unknown>, line);
            } catch {
              // a line we cannot parse is skipped, not fatal
            }
          }
        });
        res.once('end', () => resolve());
        res.once('close', () => resolve());
      });
      req.once('error', (err: NodeJS.ErrnoException) => {
        if (signal?.aborted) resolve();
        else reject(this.unreachable(err));
      });
      signal?.addEventListener('abort', () => req.destroy(), { once: true });
      req.end();
    });
  }

  /**
   * GET /events as an async iterator: `for await (const e of client.eventStream({ signal }))`.
   * Ends when vmnat ends the stream or `signal` aborts; events that arrive while the loop body
   * runs are queued (the server drops a reader more than 1 MiB behind).
   */
  async *eventStream(options: { signal?: AbortSignal } = {}): AsyncGenerator<VmnatEvent, void, undefined> {
    const queue: VmnatEvent[] = [];
    let wake: (() => void) | undefined;
    let finished = false;
    let failure: unknown;
    const stop = new AbortController();
    const onAbort = (): void => stop.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) stop.abort();
    const done = this.events((e) => {
      queue.push(e as unknown as VmnatEvent);
      wake?.();
    }, stop.signal).then(
      () => void (finished = true),
      (err: unknown) => {
        failure = err;
        finished = true;
      },
    ).finally(() => wake?.());
    try {
      for (;;) {
        const next = queue.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (finished) break;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
      if (failure !== undefined) throw failure;
    } finally {
      // A consumer that breaks out of the loop closes the stream.
      stop.abort();
      options.signal?.removeEventListener('abort', onAbort);
      await done;
    }
  }

  private unreachable(err: NodeJS.ErrnoException): Error {
    const code = err.code ?? 'EIO';
    const hint = code === 'ENOENT' || code === 'ECONNREFUSED' ? ' (is vmnat running with --api-socket at this path?)' : code === 'EACCES' ? ' (the socket is mode 0600: run as the user who started vmnat)' : '';
    return new ApiUnreachableError(this.socketPath, code, `cannot reach the API at ${this.socketPath}: ${code}${hint}`);
  }
}
