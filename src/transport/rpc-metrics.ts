// Counts every RPC and times it, by service, method and status code. Outermost
// interceptor: it sees the code the caller gets, after sanitizing. A streaming
// RPC is done when its last response message has gone out.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Metrics } from "../metrics.ts";

/** The gRPC name of a status ("OK", "InvalidArgument", …), as grpc-go prints it. */
export function statusName(err: unknown): string {
  return err === undefined ? "OK" : Code[ConnectError.from(err).code];
}

export function rpcMetricsInterceptor(metrics: Metrics): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const done = (err?: unknown) =>
      metrics.observeRpc(req.service.typeName, req.method.name, statusName(err), (performance.now() - started) / 1000);
    let res;
    try {
      res = await next(req);
    } catch (err) {
      done(err);
      throw err;
    }
    if (!res.stream) {
      done();
      return res;
    }
    return { ...res, message: observed(res.message, req.signal, done) };
  };
}

async function* observed<T>(messages: AsyncIterable<T>, signal: AbortSignal, done: (err?: unknown) => void): AsyncIterable<T> {
  const canceled = new ConnectError("the caller went away", Code.Canceled);
  // Until the stream ends by itself, it ends because the caller went away.
  let outcome: unknown = canceled;
  try {
    yield* messages;
    // A handler that returns because its call was aborted (the caller left, the
    // deadline passed, the server stopped) did not complete it.
    outcome = signal.aborted ? (signal.reason ?? canceled) : undefined;
  } catch (err) {
    outcome = err;
    throw err;
  } finally {
    done(outcome);
  }
}
