// Go-style durations (`1h30m`, `90s`, `1500ms`), as configuration and the admin API write them.

const unitMs: Record<string, number> = { ns: 1e-6, us: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a Go-style duration (`1h30m`, `90s`, `1500ms`) into milliseconds;
 * undefined when it does not follow `^([0-9]+(ns|us|ms|s|m|h))+$`.
 */
export function parseDuration(text: string): number | undefined {
  if (!/^([0-9]+(ns|us|ms|s|m|h))+$/.test(text)) return undefined;
  let ms = 0;
  for (const [, n, unit] of text.matchAll(/([0-9]+)(ns|us|ms|s|m|h)/g)) ms += Number(n) * unitMs[unit];
  return Number.isFinite(ms) ? ms : undefined;
}

export function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
