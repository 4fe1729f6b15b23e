/**
 * One WebSocket connection carrying wire-protocol frames: the browser's own `WebSocket` where
 * the platform has one, the `ws` package on Node.js (loaded only there).
 *
 * @module
 */

import { ConnectionLostError, OstinatoError, ProtocolError, RequestTimeoutError, ServerError } from "./errors.js";
import { type Frame, type WireLimits, DEFAULT_WIRE_LIMITS, decodeFrame, encodeFrame } from "./wire.js";

/** The subset of the WebSocket API used here (satisfied by the browser's and by `ws`). */
export interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** Opens a socket to `url` with `headers` (browsers ignore headers: use the token cookie there). */
export type SocketFactory = (url: string, headers: Record<string, string>) => SocketLike;

let nodeFactory: Promise<SocketFactory> | undefined;

/** The platform's WebSocket where present, else `ws` (Node.js). */
export function defaultSocketFactory(): Promise<SocketFactory> {
  const Native = (globalThis as { WebSocket?: new (url: string) => SocketLike }).WebSocket;
  if (Native !== undefined) return Promise.resolve((url: string) => new Native(url));
  nodeFactory ??= import("ws").then((mod) => {
    const WS = mod.WebSocket;
    return (url: string, headers: Record<string, string>) =>
      new WS(url, { headers, maxPayload: DEFAULT_WIRE_LIMITS.maxMessageBytes, perMessageDeflate: false }) as unknown as SocketLike;
  });
  return nodeFactory;
}

export interface ConnectionHandlers {
  onFrame: (frame: Frame) => void;
  /** The socket closed (by either side); `error` says why when it was not a clean close. */
  onClose: (error: OstinatoError | undefined) => void;
}

/** An open WebSocket speaking the wire protocol. */
export class Connection {
  /** When the last message arrived (performance.now() ms). */
  lastMessageAt = performance.now();
  private closed = false;

  private constructor(
    private readonly socket: SocketLike,
    private readonly limits: WireLimits,
  ) {}

  /**
   * Open a connection within `timeoutMs`.
   *
   * @throws {RequestTimeoutError} The handshake did not finish in time (transient).
   * @throws {ConnectionLostError} Refused, reset or rejected before opening (transient).
   * @throws {ServerError} The server refused the upgrade with HTTP 4xx (e.g. 401: bad token).
   */
  static open(factory: SocketFactory, url: string, headers: Record<string, string>, timeoutMs: number, handlers: ConnectionHandlers, limits: WireLimits = DEFAULT_WIRE_LIMITS): Promise<Connection> {
    return new Promise((resolve, reject) => {
      let socket: SocketLike;
      try {
        socket = factory(url, headers);
      } catch (e) {
        reject(new ConnectionLostError(`cannot open ${url}: ${(e as Error).message}`, { cause: e }));
        return;
      }
      socket.binaryType = "arraybuffer";
      const conn = new Connection(socket, limits);
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        conn.abort();
        reject(new RequestTimeoutError(`no WebSocket handshake from ${url} within ${timeoutMs} ms`));
      }, timeoutMs);
      let failure: unknown;
      socket.onerror = (ev) => {
        failure = (ev as { error?: unknown }).error ?? ev;
      };
      socket.onopen = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        conn.attach(handlers);
        resolve(conn);
      };
      socket.onclose = (ev) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(handshakeError(url, failure, ev.code));
      };
    });
  }

  /** Whether the socket can still send. */
  get open(): boolean {
    return !this.closed && this.socket.readyState === 1;
  }

  /**
   * Send one frame.
   *
   * @throws {ConnectionLostError} The socket is not open.
   */
  send(frame: Frame): void {
    if (!this.open) throw new ConnectionLostError(`cannot send ${frame.type}: the connection is closed`);
    this.socket.send(encodeFrame(frame, this.limits));
  }

  /** Close cleanly (1000). */
  close(reason = "client closing"): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.socket.close(1000, reason);
    } catch {
      // already closing
    }
  }

  /** Drop the connection at once (no closing handshake), as a network failure would. */
  abort(): void {
    this.closed = true;
    const terminate = (this.socket as { terminate?: () => void }).terminate;
    try {
      if (terminate) terminate.call(this.socket);
      else this.socket.close(4000, "aborted");
    } catch {
      // already gone
    }
  }

  private attach(handlers: ConnectionHandlers): void {
    this.socket.onmessage = (ev) => {
      this.lastMessageAt = performance.now();
      const data = ev.data;
      if (!(data instanceof ArrayBuffer) && !(data instanceof Uint8Array)) {
        handlers.onFrame({ type: "error", code: "protocol_error", message: "text message from the server", error_class: "input", hint: "", fatal: false });
        return;
      }
      let frame: Frame;
      try {
        frame = decodeFrame(data, this.limits);
      } catch (e) {
        const message = e instanceof ProtocolError ? e.message : String(e);
        handlers.onFrame({ type: "error", code: "protocol_error", message: `undecodable frame from the server: ${message}`, error_class: "input", hint: "", fatal: false });
        return;
      }
      handlers.onFrame(frame);
    };
    let failure: unknown;
    this.socket.onerror = (ev) => {
      failure = (ev as { error?: unknown }).error ?? ev;
    };
    this.socket.onclose = (ev) => {
      const wasOurs = this.closed;
      this.closed = true;
      const clean = ev.code === 1000 || ev.code === 1001;
      handlers.onClose(
        wasOurs || clean
          ? undefined
          : new ConnectionLostError(`connection closed (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ""}${failure ? `; ${String((failure as Error).message ?? failure)}` : ""})`),
      );
    };
  }
}

function handshakeError(url: string, failure: unknown, code: number): OstinatoError {
  const message = failure instanceof Error ? failure.message : "";
  const status = /Unexpected server response: (\d+)/.exec(message)?.[1];
  if (status !== undefined) {
    const n = Number(status);
    const errorClass = n >= 500 || n === 429 ? "transient" : "permanent";
    const hint = n === 401 || n === 403 ? "check the token (--token-file on the server)" : "";
    return new ServerError(`server refused the WebSocket ${url}: HTTP ${n}`, { status: n, errorClass, code: `http_${n}`, hint });
  }
  return new ConnectionLostError(`cannot connect to ${url}${message ? `: ${message}` : ""} (close code ${code})`, { cause: failure });
}
