// How many of something each key holds at once (a client address's connections or
// streams), for the limits per key. A key whose count falls to zero is forgotten,
// so the map holds only the keys that hold something now.

export class CountsByKey {
  readonly #counts = new Map<string, number>();

  of(key: string): number {
    return this.#counts.get(key) ?? 0;
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
