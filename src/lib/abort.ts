// Waiting on work that an AbortSignal may cut short, without leaving anything
// behind: no timer, no listener, and no promise whose rejection nobody handles.

/**
 * Settles like `work`, or rejects with the signal's reason as soon as it aborts.
 * `work` is always given a handler, so its late rejection is never unhandled;
 * the abort listener is removed once either side settles.
 */
export function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

/** Resolves after `ms`, or at once when `signal` aborts; leaves no timer or listener behind. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** Calls `fn` and turns a synchronous throw into a rejected promise. */
export function attempt<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn();
  } catch (err) {
    return Promise.reject(err);
  }
}

/** What chunksUntil reads from: a node:http or node:http2 request. */
export interface ByteSource {
  on(event: "data", listener: (chunk: Buffer) => void): unknown;
  on(event: "end" | "close", listener: () => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
  off(event: string, listener: (...args: any[]) => void): unknown;
  pause(): unknown;
  resume(): unknown;
  readableEnded: boolean;
}

/**
 * The chunks of a request body until it ends, or until `signal` aborts (the
 * iteration then throws the signal's reason). One chunk is read at a time.
 * On abort nothing is left reading: the stream is paused with its listeners
 * removed, not destroyed, so that the caller can still answer on it (a pending
 * async-iterator read would keep an HTTP/2 stream open after its answer).
 */
export async function* chunksUntil(source: ByteSource, signal: AbortSignal, clientGone: () => Error): AsyncGenerator<Uint8Array> {
  const queue: Buffer[] = [];
  let ended = source.readableEnded;
  let failure: { err: unknown } | undefined;
  let wake: (() => void) | undefined;
  const onData = (chunk: Buffer) => {
    queue.push(chunk);
    source.pause();
    wake?.();
  };
  const onEnd = () => {
    ended = true;
    wake?.();
  };
  const onClose = () => {
    if (!ended) failure ??= { err: clientGone() };
    wake?.();
  };
  const onError = (err: Error) => {
    failure ??= { err };
    wake?.();
  };
  const onAbort = () => {
    failure ??= { err: signal.reason };
    wake?.();
  };
  source.on("data", onData);
  source.on("end", onEnd);
  source.on("close", onClose);
  source.on("error", onError);
  signal.addEventListener("abort", onAbort, { once: true });
  if (signal.aborted) onAbort();
  try {
    for (;;) {
      if (failure) throw failure.err;
      const chunk = queue.shift();
      if (chunk) {
        yield chunk;
        continue;
      }
      if (ended) return;
      source.resume();
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
  } finally {
    source.pause();
    source.off("data", onData);
    source.off("end", onEnd);
    source.off("close", onClose);
    source.off("error", onError);
    signal.removeEventListener("abort", onAbort);
  }
}

/** Settles like `work`, or rejects after `ms` with `Error(message)`; the timer is cleared either way. */
export function withTimeout<T>(work: Promise<T>, ms: number, message = `no answer within ${ms} ms`): Promise<T> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(message)), ms);
  return raceAbort(work, controller.signal).finally(() => clearTimeout(timer));
}
