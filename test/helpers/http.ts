import { Socket } from 'node:net';

/**
 * The tests' one HTTP client below `inject` and `fetch`: requests written byte for byte on a
 * socket of their own, so that a header can repeat or keep its spelling, a body can lie about
 * its length or grow past a limit, and a test decides which requests share a connection (one
 * sent while an earlier one is unanswered is pipelined behind it). Answers are read framed by
 * Content-Length (Fastify's are), or up to the close where there is none; chunked answers are
 * not read.
 */

export interface RawResponse {
  status: number;
  /** Names in lower case. */
  headers: Record<string, string>;
  text: string;
  /** The text parsed as JSON; the text itself when it is not JSON; undefined when empty. */
  body: any;
}

export type RawHeaders = Record<string, string | readonly string[]>;

/** One HTTP/1.1 keep-alive connection on a raw socket. */
export class RawConnection {
  private buffer = Buffer.alloc(0);
  private readonly responses: RawResponse[] = [];
  private readonly listeners = new Set<() => void>();
  private ended = false;
  private failure: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.parse();
      this.notify();
    });
    // a reset once the server has answered (a body it stopped reading, say) is expected: 'close' follows
    socket.on('error', (error) => {
      this.failure = error;
      this.notify();
    });
    socket.on('close', () => {
      this.ended = true;
      this.parse();
      this.notify();
    });
  }

  /** Connects to a port on 127.0.0.1, or to the host and port of a URL; rejects with the socket error (ECONNREFUSED, …). */
  static open(target: number | string): Promise<RawConnection> {
    const { hostname, port } = typeof target === 'number' ? { hostname: '127.0.0.1', port: target } : new URL(target);
    return new Promise((resolve, reject) => {
      const socket = new Socket();
      const onError = (error: Error) => reject(error);
      socket.once('error', onError);
      socket.connect(Number(port), hostname, () => {
        socket.off('error', onError);
        resolve(new RawConnection(socket));
      });
    });
  }

  /**
   * The bytes of one request: a line per header (a list, a line per value), and with a `body`
   * its JSON with Content-Type and Content-Length; without one, the headers as given.
   */
  static request(method: string, path: string, headers: RawHeaders, body?: unknown): string {
    const payload = body === undefined ? '' : JSON.stringify(body);
    const lines = [`${method} ${path} HTTP/1.1`, 'host: 127.0.0.1', 'connection: keep-alive'];
    for (const [k, v] of Object.entries(headers)) for (const value of typeof v === 'string' ? [v] : v) lines.push(`${k}: ${value}`);
    if (body !== undefined) lines.push('content-type: application/json', `content-length: ${Buffer.byteLength(payload)}`);
    return `${lines.join('\r\n')}\r\n\r\n${payload}`;
  }

  /** Writes one request; does not wait for the answer. */
  send(method: string, path: string, headers: RawHeaders, body?: unknown): void {
    this.write(RawConnection.request(method, path, headers, body));
  }

  /** Writes raw bytes (part of a request, say); false when the socket's buffer is full (see `drained`). */
  write(data: string | Buffer): boolean {
    return this.socket.write(data);
  }

  /** Resolves once the socket can take more, or something has happened: an answer, an error, the close. */
  drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.listeners.delete(done);
        resolve();
      };
      this.socket.once('drain', done);
      this.listeners.add(done);
    });
  }

  /** Responses received so far. */
  received(): number {
    return this.responses.length;
  }

  /** Whether the connection has closed. */
  isClosed(): boolean {
    return this.ended;
  }

  /** Resolves with the n-th response (0-based) of this connection; rejects if it closes first. */
  response(n: number, timeoutMs = 30_000): Promise<RawResponse> {
    return this.until(
      () => this.responses[n],
      () => `no response #${n} in ${timeoutMs} ms`,
      timeoutMs,
      () => this.failure ?? new Error(`connection closed after ${this.responses.length} responses: ${this.buffer.toString('latin1').slice(0, 300)}`),
    );
  }

  /** Resolves once the server has closed the connection. */
  async closed(timeoutMs = 30_000): Promise<void> {
    await this.until(
      () => this.ended || undefined,
      () => `connection still open after ${timeoutMs} ms`,
      timeoutMs,
    );
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Resolves with `value()` once it is defined; rejects after `timeoutMs`, or when the connection closes first if `closedError` is given. */
  private until<T>(value: () => T | undefined, timeoutMessage: () => string, timeoutMs: number, closedError?: () => Error): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const v = value();
        if (v !== undefined) return done(() => resolve(v));
        if (closedError && this.ended) return done(() => reject(closedError()));
      };
      const done = (then: () => void) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        then();
      };
      const timer = setTimeout(() => done(() => reject(new Error(timeoutMessage()))), timeoutMs);
      this.listeners.add(check);
      check();
    });
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }

  private parse(): void {
    for (;;) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(head[0]?.split(' ')[1]);
      const headers: Record<string, string> = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      if (headers['transfer-encoding']) {
        this.failure = new Error(`RawConnection does not read ${headers['transfer-encoding']} bodies`);
        this.socket.destroy(this.failure);
        return;
      }
      const declared = status === 204 || status === 304 ? '0' : headers['content-length'];
      if (declared === undefined && !this.ended) return; // the body runs to the close
      const length = declared === undefined ? this.buffer.length - end - 4 : Number(declared);
      if (this.buffer.length < end + 4 + length) return;
      const text = this.buffer.subarray(end + 4, end + 4 + length).toString('utf8');
      this.buffer = this.buffer.subarray(end + 4 + length);
      let body: unknown = text;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        // not JSON
      }
      this.responses.push({ status, headers, text, body });
    }
  }
}

/**
 * One exchange on a connection of its own, closed once answered: `request` is written as it is
 * (bytes Node's own client would refuse to send), or writes what it likes on the connection.
 */
export async function sendRaw(url: string, request: string | Buffer | ((connection: RawConnection) => Promise<void>)): Promise<RawResponse> {
  const connection = await RawConnection.open(url);
  try {
    if (typeof request === 'function') await request(connection);
    else connection.write(request);
    return await connection.response(0);
  } finally {
    connection.destroy();
  }
}

/** One request on a connection of its own: a header may repeat (a list) or keep its spelling; a JSON `body` if given. */
export function rawRequest(url: string, method: string, path: string, options: { headers?: RawHeaders; body?: unknown } = {}): Promise<RawResponse> {
  return sendRaw(url, RawConnection.request(method, path, options.headers ?? {}, options.body));
}
