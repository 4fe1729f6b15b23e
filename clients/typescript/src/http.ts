/**
 * REST calls to the ostinato service with a per-request timeout; HTTP problem bodies
 * (`{"error": {"code", "message", "error_class", "hint", "field"?}}`) become typed errors.
 *
 * @module
 */

import { ConnectionLostError, OstinatoError, RequestTimeoutError, ServerError, errorFromWire } from "./errors.js";

export interface HttpResponse {
  status: number;
  body: unknown;
}

export interface HttpRequest {
  method: "GET" | "POST" | "DELETE";
  path: string;
  query?: Record<string, string> | undefined;
  json?: unknown;
}

/** Minimal REST client: JSON in, JSON out, one timeout per request (connect + headers + body). */
export class HttpClient {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  private readonly headers: Record<string, string>;

  constructor(baseUrl: string, timeoutMs: number, token?: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.timeoutMs = timeoutMs;
    this.headers = token ? { Authorization: `Bearer ${token}` } : {};
  }

  /**
   * Send one request.
   *
   * @throws {RequestTimeoutError} No complete answer within `timeoutMs` (transient).
   * @throws {ConnectionLostError} The server cannot be reached (transient).
   * @throws {OstinatoError} The server's problem body as a typed error (`ConfigError` for 422).
   */
  async request(req: HttpRequest): Promise<HttpResponse> {
    const url = new URL(this.baseUrl + req.path);
    for (const [k, v] of Object.entries(req.query ?? {})) url.searchParams.set(k, v);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    const headers: Record<string, string> = { ...this.headers, Accept: "application/json" };
    if (req.json !== undefined) headers["Content-Type"] = "application/json";
    let status: number;
    let text: string;
    try {
      const response = await fetch(url, {
        method: req.method,
        headers,
        body: req.json !== undefined ? JSON.stringify(req.json) : null,
        signal: controller.signal,
      });
      status = response.status;
      text = await response.text();
    } catch (e) {
      if (controller.signal.aborted) {
        throw new RequestTimeoutError(`${req.method} ${url.pathname}: no answer from ${this.baseUrl} within ${this.timeoutMs} ms`, { cause: e });
      }
      throw new ConnectionLostError(`${req.method} ${url.pathname}: cannot reach ${this.baseUrl}: ${describeCause(e)}`, {
        cause: e,
        hint: "check that `ostinato serve` runs at that address; the client retries with backoff",
      });
    } finally {
      clearTimeout(timer);
    }
    const body = parseJson(text);
    if (status >= 200 && status < 300) return { status, body };
    throw problemError(req, status, body, text);
  }
}

function problemError(req: HttpRequest, status: number, body: unknown, text: string): OstinatoError {
  const problem = (body as { error?: Record<string, unknown> } | undefined)?.error;
  if (problem && typeof problem.code === "string" && typeof problem.message === "string") {
    const field = typeof problem.field === "string" ? problem.field : undefined;
    return errorFromWire(problem.code, problem.message, String(problem.error_class ?? ""), String(problem.hint ?? ""), {
      status,
      ...(field !== undefined ? { field } : {}),
    });
  }
  const errorClass = status >= 500 || status === 429 ? "transient" : status >= 400 && status < 500 ? "input" : "permanent";
  return new ServerError(`${req.method} ${req.path}: HTTP ${status}: ${text.slice(0, 200)}`, { status, errorClass, code: `http_${status}` });
}

function parseJson(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function describeCause(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (e as Error).message ?? String(e);
}
