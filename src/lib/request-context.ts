import { AsyncLocalStorage } from "node:async_hooks";

/**
 * The request a piece of code runs for, kept across awaits and timers: read by
 * the process-level error handlers (process-guard.ts) to name the request an
 * unhandled error came from.
 */
export const requestContext = new AsyncLocalStorage<{ requestId: string }>();
