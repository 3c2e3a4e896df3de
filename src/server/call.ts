// One call (an RPC, or a REST request that runs one) has one owner for
// everything it arms: the timer of its bound, the signal its handler sees, the
// reader of its body, and the cut of a connection that will not take its
// answer. All of it ends when the response closes, on every path: answered,
// refused, failed, or abandoned by the client.
import http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { chunksUntil } from "../lib/abort.ts";
import { apiError, Reason } from "../services/errors.ts";
import type { HttpRequest, HttpResponse } from "./http-routes.ts";

export interface CallBounds {
  /** A unary call, from the arrival of its request head to its answer (RPC_TIMEOUT). */
  unaryMs: number;
  /** A streaming call's longest life (STREAM_MAX_LIFETIME). */
  streamMs: number;
  /** Once a bound has passed, how long the answer gets to leave before the stream or connection is cut. */
  graceMs: number;
}

export interface Call {
  /** Aborts when the bound passes (reason: a ConnectError to answer with) or the client goes away. */
  signal: AbortSignal;
  /** The request body, read until it ends or the signal aborts. */
  body: AsyncIterable<Uint8Array>;
  /**
   * To call right before the answer's res.end(): an HTTP/2 client still
   * sending its body is then told to stop (RST_STREAM NO_ERROR after the
   * answer, as RFC 9113 §8.1 allows). Node keeps a stream whose body was partly
   * read open after its answer until the client ends it, which a hostile client
   * never does.
   */
  closeAfterAnswer(): void;
}

// Made only when a bound passes: an error captures a stack trace, which every call would pay for.
export const deadlineExceeded = (ms: number) => () =>
  apiError(Code.DeadlineExceeded, Reason.deadlineExceeded, `the request took longer than ${ms} ms`);

/** Its request not read whole in time: not received, or the gate before it (an admin token's check) too slow. */
export const startedLate = (ms: number) => () =>
  apiError(Code.DeadlineExceeded, Reason.deadlineExceeded, `the stream did not start within ${ms} ms: its request was not read whole by then`);

export const streamExpired = (ms: number) => () =>
  apiError(Code.Unavailable, Reason.unavailable, `the stream reached its maximum lifetime of ${ms} ms; open a new one`);

const clientGone = () => new ConnectError("the client went away", Code.Canceled);

/**
 * Opens a call bounded by `limitMs`. When the bound passes, the signal aborts
 * with the error `expired` makes, an HTTP/1.1 connection will close after the answer, and the
 * answer gets `graceMs` to leave before the response is destroyed. A call that
 * needs its whole request before it can start (a server stream's one message)
 * is bounded the same way by `requestMs` until that request has been read.
 */
export function openCall(req: HttpRequest, res: HttpResponse, limitMs: number, expired: () => ConnectError, graceMs: number, requestMs = Infinity): Call {
  const controller = new AbortController();
  let cut: NodeJS.Timeout | undefined;
  const expire = (reason: ConnectError) => {
    if (controller.signal.aborted) return;
    controller.abort(reason);
    // The rest of a body that did not arrive in time must not hold the connection.
    if ("shouldKeepAlive" in res && !res.headersSent) res.shouldKeepAlive = false;
    cut = setTimeout(() => res.destroy(), graceMs);
  };
  const bound = setTimeout(() => expire(expired()), limitMs);
  // connect-es reads a server stream's request to its end once the gate has let it pass, before its handler starts.
  const arrival =
    requestMs < limitMs
      ? setTimeout(() => {
          if (!req.readableEnded) expire(startedLate(requestMs)());
        }, requestMs)
      : undefined;
  res.once("close", () => {
    clearTimeout(bound);
    clearTimeout(arrival);
    clearTimeout(cut);
    // Not ended by us: the client left (HTTP/2 reports "finish" even for a reset stream).
    if (!res.writableEnded && !controller.signal.aborted) controller.abort(clientGone());
  });
  return {
    signal: controller.signal,
    body: chunksUntil(req, controller.signal, clientGone),
    closeAfterAnswer() {
      if (!("stream" in req) || req.readableEnded) return;
      const stream = req.stream;
      // Node's compatibility layer sends the trailers on "wantTrailers", as the answer ends; the reset follows them.
      stream.once("wantTrailers", () =>
        setImmediate(() => {
          if (!req.readableEnded && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
        }),
      );
    },
  };
}
