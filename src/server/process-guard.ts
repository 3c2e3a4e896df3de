// Errors that nobody handled, process-wide: a promise rejection nobody awaited,
// an exception thrown out of a callback. Each is logged at error level with the
// id of the request it happened in (kept by requestContext across awaits and
// timers) and counted in codegate_process_errors_total.
//
// What the process does next (README, "Running it in production"):
// - an unhandled rejection is a bug, but it left no half-done synchronous
//   state behind: the process goes on serving, and the count makes it visible;
// - an uncaught exception may have stopped code halfway (Node's documentation
//   says the process is then in an undefined state): the server stops taking
//   requests, lets those in flight finish within SHUTDOWN_GRACE, and exits 1
//   for its supervisor to start a fresh one.
import type { Logger } from "../lib/log.ts";
import type { ProcessErrorKind } from "./ops/metrics.ts";
import { requestContext } from "../lib/request-context.ts";

export interface ProcessGuardOptions {
  count(kind: ProcessErrorKind): void;
  /** Called once, on the first uncaught exception. */
  onUncaughtException(err: unknown): void;
}

/** Installs the handlers; answers a function that removes them. */
export function guardProcess(log: Logger, opts: ProcessGuardOptions): () => void {
  let crashed = false;
  const onRejection = (reason: unknown) => {
    log.error({ requestId: requestContext.getStore()?.requestId, err: reason }, "unhandled promise rejection");
    opts.count("unhandled_rejection");
  };
  const onException = (err: unknown) => {
    log.error({ requestId: requestContext.getStore()?.requestId, err }, "uncaught exception; shutting down");
    opts.count("uncaught_exception");
    if (crashed) return;
    crashed = true;
    opts.onUncaughtException(err);
  };
  process.on("unhandledRejection", onRejection);
  process.on("uncaughtException", onException);
  return () => {
    process.off("unhandledRejection", onRejection);
    process.off("uncaughtException", onException);
  };
}
