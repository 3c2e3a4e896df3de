// Lines a client can make the server write (refused connections, failed admin
// authentications) are written at most once a period per kind, each with how many of
// that kind were held back since the last: a flood must not flood the log.

/**
 * Asks whether a line of `kind` may be written now: undefined while the period of the
 * last one written lasts (the line is counted as held back), else how many were held back.
 */
export function lineThrottle<K>(periodMs: number, clock: () => number = () => performance.now()): (kind: K) => number | undefined {
  const last = new Map<K, { at: number; heldBack: number }>();
  return (kind) => {
    const now = clock();
    const seen = last.get(kind);
    if (seen && now - seen.at < periodMs) return void seen.heldBack++;
    last.set(kind, { at: now, heldBack: 0 });
    return seen?.heldBack ?? 0;
  };
}
