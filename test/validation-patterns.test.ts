// The request validator matches the schema's `string.pattern` rules with V8's
// RegExp where src/server/validation.ts lists them, and with RE2 otherwise. This
// proves the list is the schema's patterns, no more and no fewer, and that for
// each of them RegExp answers as RE2 does: on valid examples, on thousands of
// mutations of them (control characters, non-ASCII, surrogates, a trailing
// newline for `$`), and on long near-misses built to make a backtracking engine
// try every split (each would run for minutes if a pattern backtracked
// exponentially; the test has seconds).
import { readdirSync } from "node:fs";
import { getOption, hasOption, toJson, type DescMessage } from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { field as fieldRules, FieldRulesSchema, message as messageRules } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { RE2JS } from "@bufbuild/re2";
import { describe, expect, it } from "vitest";
import { patternMatches, SCHEMA_PATTERNS } from "../src/server/validation.ts";

const genDir = new URL("../gen/codegate/v1/", import.meta.url);
const files = await Promise.all(
  readdirSync(genDir)
    .filter((f) => f.endsWith("_pb.ts"))
    .map(async (f) => Object.values(await import(new URL(f, genDir).href)).filter((v: any) => v?.kind === "file") as any[]),
);

function* messagesOf(): Iterable<DescMessage> {
  for (const file of files.flat()) for (const t of nestedTypes(file)) if (t.kind === "message") yield t;
}

/** Every `pattern` in the field rules of the schema, and every CEL expression. */
function schemaRules(): { patterns: Set<string>; cel: string[] } {
  const patterns = new Set<string>();
  const cel: string[] = [];
  const walk = (v: unknown, key = ""): void => {
    if (typeof v === "string") {
      if (key === "pattern") patterns.add(v);
      if (key === "expression") cel.push(v);
    } else if (Array.isArray(v)) v.forEach((x) => walk(x, key));
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  for (const m of messagesOf()) {
    if (hasOption(m, messageRules)) walk(getOption(m, messageRules).cel.map((c) => c.expression), "expression");
    for (const f of m.fields) if (hasOption(f, fieldRules)) walk(toJson(FieldRulesSchema, getOption(f, fieldRules)));
  }
  return { patterns, cel };
}

/** Texts each pattern must match. */
const VALID: Record<string, string[]> = {
  "^[^\\x00-\\x1f\\x7f]*$": ["", "alice@example.com", "Ünïcødé — 😀 名前"],
  "^[\\x21-\\x7e]*$": ["", "flow-0123456789abcdef~!{}"],
  "^[A-Za-z0-9_-]*$": ["", "abc_DEF-123"],
  "^[A-Za-z0-9._~-]*$": ["", "a.b~c_d-e"],
  "^or-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{14,17}$": ["or-abcde-12345-0123456789abcd", "or-abcde-12345-0123456789abcdefg"],
  "^(or-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{14,17})?$": ["", "or-abcde-12345-0123456789abcde"],
  "^acct-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{14,17}$": ["acct-abcde-12345-0123456789abcdefg"],
  "^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$": ["en", "pt-BR", "zh-Hant-TW", "de-DE-1996"],
  "^\\+[1-9][0-9]{6,14}$": ["+4915112345678", "+1234567"],
  "^([0-9]+(ns|us|ms|s|m|h))*$": ["", "10m", "1h30m", "500ms", "2h5s7us9ns"],
  "^([0-9]{1,19}-[0-9]{1,19})?$": ["", "1-2", "1234567890123456789-9"],
  "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$": ["", "0190e6b2-0000-7000-8000-00000000ABCD"],
};

// What mutations insert: every class the patterns name, their edges, and what none of them allows.
const ALPHABET = ["a", "z", "A", "Z", "0", "9", "-", "_", ".", "~", "+", "!", " ", "\t", "\n", "\r", "\x00", "\x1f", "\x20", "\x21", "\x7e", "\x7f", "\x80", "é", "ß", "\u212a", "—", "😀", "\ud800", "\udfff", "m", "s", "h", "n", "u"];

/** A small seeded generator, so a failure names an input that comes back on the next run. */
function random(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return s % n;
  };
}

function mutations(valid: string[], seed: number, count: number): string[] {
  const r = random(seed);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const chars = [...valid[r(valid.length)]!];
    for (let edits = 1 + r(3); edits > 0; edits--) {
      const at = r(chars.length + 1);
      const c = ALPHABET[r(ALPHABET.length)]!;
      const kind = r(3);
      if (kind === 0) chars.splice(at, 0, c);
      else if (kind === 1) chars.splice(at, 1);
      else chars.splice(at, 1, c);
    }
    out.push(chars.join(""));
  }
  return out;
}

/** Long texts that almost match: repetitions of a valid piece, then one character that fails the end. */
function nearMisses(valid: string[]): string[] {
  return valid.filter(Boolean).flatMap((v) => ["\x00", "!", "\n", "-", "0"].flatMap((bad) => [v.repeat(5000) + bad, v + bad.repeat(50000), bad + v]));
}

describe("schema patterns on V8's RegExp", () => {
  const { patterns, cel } = schemaRules();

  it("are exactly the schema's patterns, and no CEL rule builds a pattern of its own", () => {
    expect(patterns.size).toBeGreaterThan(5);
    expect([...SCHEMA_PATTERNS].sort()).toEqual([...patterns].sort());
    expect(cel.length).toBeGreaterThan(0);
    expect(cel.filter((e) => e.includes("matches("))).toEqual([]);
  });

  it.each([...SCHEMA_PATTERNS])("%s: RegExp answers as RE2 does", (pattern) => {
    const valid = VALID[pattern];
    expect(valid, "valid examples for the pattern").toBeDefined();
    const re2 = RE2JS.compile(pattern);
    for (const v of valid!) expect(patternMatches(pattern, v), JSON.stringify(v)).toBe(true);
    const inputs = [...mutations(valid!, SCHEMA_PATTERNS.indexOf(pattern) + 1, 3000), ...nearMisses(valid!)];
    const disagreements = inputs.filter((s) => patternMatches(pattern, s) !== re2.test(s)).map((s) => JSON.stringify(s.slice(0, 80)));
    expect(disagreements).toEqual([]);
    // Both answers occur among the mutations, or the comparison proved little.
    const answers = new Set(inputs.map((s) => re2.test(s)));
    expect(answers).toEqual(new Set([true, false]));
  });

  it("leaves a pattern it does not list to RE2", () => {
    // RE2 syntax that V8 refuses with the u flag: a one-letter Unicode class without braces.
    expect(() => new RegExp("^\\pL+$", "u")).toThrow();
    expect(patternMatches("^\\pL+$", "Ünïcødé")).toBe(true);
    expect(patternMatches("^\\pL+$", "abc1")).toBe(false);
  });
});
