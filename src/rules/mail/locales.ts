// Which language a mail is written in: the caller's locales in their order
// (the send's `locale`, else its Accept-Language), each also by its language
// alone ("de-CH", then "de"), then the organization's default locale, then
// English. A locale is a BCP 47 language tag; tags are compared case-insensitively.

/** The canonical form of a BCP 47 tag ("pt-br" -> "pt-BR"), or undefined if it is none. */
export function canonicalLocale(tag: string): string | undefined {
  if (!/^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$/.test(tag) || tag.length > 35) return undefined;
  try {
    return Intl.getCanonicalLocales(tag)[0];
  } catch {
    return undefined;
  }
}

/** A tag and its shorter forms, lower-cased: "zh-Hant-TW" -> zh-hant-tw, zh-hant, zh. */
function withParents(tag: string): string[] {
  const parts = tag.toLowerCase().split("-");
  const out: string[] = [];
  for (let n = parts.length; n >= 1; n--) {
    // A lone singleton ("en-x") is no locale of its own.
    if (n > 1 && parts[n - 1].length === 1) continue;
    out.push(parts.slice(0, n).join("-"));
  }
  return out;
}

/** The lower-cased tags to try, in order, ending with "en". */
export function localeChain(requested: readonly string[], orgDefault: string | undefined): string[] {
  const chain = new Set<string>();
  for (const tag of [...requested, ...(orgDefault ? [orgDefault] : [])]) for (const t of withParents(tag)) chain.add(t);
  chain.add("en");
  return [...chain];
}

/** At most this many of an Accept-Language header's tags are used. */
const MAX_ACCEPTED = 8;

/**
 * The tags of an Accept-Language header, most preferred first (by q, then by
 * order); `*`, q=0 and anything that is not a tag are left out.
 */
export function parseAcceptLanguage(header: string | null | undefined): readonly string[] {
  if (!header) return [];
  // Browsers send a few distinct headers over and over: each is parsed once (about 5 µs).
  const known = parsed.get(header);
  if (known) return known;
  const tags = parse(header);
  if (header.length > MAX_KEPT_LENGTH) return tags;
  if (parsed.size >= MAX_PARSED) parsed.clear();
  parsed.set(header, tags);
  return tags;
}

/** At most MAX_PARSED headers of at most MAX_KEPT_LENGTH characters: a few hundred kB whatever clients send. */
const parsed = new Map<string, readonly string[]>();
const MAX_PARSED = 1000;
const MAX_KEPT_LENGTH = 200;

function parse(header: string): readonly string[] {
  const entries: { tag: string; q: number; i: number }[] = [];
  for (const [i, part] of header.slice(0, 1024).split(",").slice(0, 32).entries()) {
    const [rawTag, ...params] = part.trim().split(";");
    const tag = canonicalLocale(rawTag.trim());
    if (!tag) continue;
    let q = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*([01](\.\d{0,3})?)\s*$/i.exec(p);
      if (m) q = Number(m[1]);
    }
    if (q > 0) entries.push({ tag, q, i });
  }
  const tags = entries
    .sort((a, b) => b.q - a.q || a.i - b.i)
    .slice(0, MAX_ACCEPTED)
    .map((e) => e.tag);
  return Object.freeze(tags);
}

const units: [number, Intl.NumberFormatOptions["unit"]][] = [
  [86_400_000, "day"],
  [3_600_000, "hour"],
  [60_000, "minute"],
  [1000, "second"],
];
const formats = new Map<string, Intl.NumberFormat>();
function unitFormat(locale: string, unit: string): Intl.NumberFormat {
  const key = `${locale}|${unit}`;
  let f = formats.get(key);
  if (!f) {
    f = new Intl.NumberFormat(locale, { style: "unit", unit, unitDisplay: "long" });
    if (formats.size < 1000) formats.set(key, f);
  }
  return f;
}

/** A lifespan in words of `locale`: the largest unit that divides it ("1 day", "10 Minuten"), else whole minutes or seconds. */
export function formatLifespan(ms: number, locale: string): string {
  // A lifespan is one of a few settings: ICU's formatting, on every mail, showed in profiles.
  const key = `${locale}|${ms}`;
  let words = lifespans.get(key);
  if (words === undefined) {
    words = lifespanInWords(ms, locale);
    if (lifespans.size < 1000) lifespans.set(key, words);
  }
  return words;
}
const lifespans = new Map<string, string>();

function lifespanInWords(ms: number, locale: string): string {
  for (const [size, unit] of units) if (ms >= size && ms % size === 0) return unitFormat(locale, unit!).format(ms / size);
  const minutes = Math.round(ms / 60_000);
  return minutes >= 1 ? unitFormat(locale, "minute").format(minutes) : unitFormat(locale, "second").format(Math.round(ms / 1000));
}
