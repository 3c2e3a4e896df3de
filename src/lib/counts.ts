// How many of something each key holds at once (a client address's connections or
// streams), for the limits per key. A key whose count falls to zero is forgotten,
// so the map holds only the keys that hold something now. And how many times each
// key came within a window, for the rates per key.

export class CountsByKey {
  readonly #counts = new Map<string, number>();

  of(key: string): number {
    return this.#counts.get(key) ?? 0;
  }

  /** How many keys hold something now: the map's size. */
  get keys(): number {
    return this.#counts.size;
  }

  /** Counts one more for `key`; answers its release, which counts it once. */
  add(key: string): () => void {
    this.#counts.set(key, this.of(key) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = this.of(key) - 1;
      if (left > 0) this.#counts.set(key, left);
      else this.#counts.delete(key);
    };
  }
}

/**
 * How many times each key came in the current window: fixed windows of `windowMs`,
 * every key forgotten when a new one starts, so the map holds only this window's keys.
 */
export class CountsInWindow {
  readonly #counts = new Map<string, number>();
  readonly #windowMs: number;
  readonly #clock: () => number;
  #started = -Infinity;

  constructor(windowMs: number, clock: () => number = () => performance.now()) {
    this.#windowMs = windowMs;
    this.#clock = clock;
  }

  /** Counts one more for `key`; answers its count in this window, this one included. */
  add(key: string): number {
    const now = this.#clock();
    if (now - this.#started >= this.#windowMs) {
      this.#counts.clear();
      this.#started = now;
    }
    const count = (this.#counts.get(key) ?? 0) + 1;
    this.#counts.set(key, count);
    return count;
  }
}
