// The validator of every request: protovalidate, with the `string.pattern` rules
// of this service's own protos matched by V8's RegExp instead of RE2.
//
// protovalidate matches schema patterns with RE2 ported to JavaScript
// (@bufbuild/re2), whose DFA took about 2 % of a send's server CPU for its two
// patterns. RE2 is there so that a pattern from anywhere matches in linear time.
// The patterns listed here are fixed text of proto/, each a flat character class
// or an unambiguous sequence (no quantifier over an alternative that can match
// the same text two ways), so V8 matches them in linear time too, and with the
// `u` flag (code points, as RE2 reads them) it answers as RE2 does: the test
// proves both for every pattern in the schema. A pattern not listed (one a proto
// gains later) still goes to RE2.
import { createValidator, type Validator } from "@bufbuild/protovalidate";
import { RE2JS } from "@bufbuild/re2";

export const SCHEMA_PATTERNS: readonly string[] = [
  "^[^\\x00-\\x1f\\x7f]*$",
  "^[\\x21-\\x7e]*$",
  "^[A-Za-z0-9_-]*$",
  "^[A-Za-z0-9._~-]*$",
  "^or-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{14,17}$",
  "^(or-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{14,17})?$",
  "^acct-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{14,17}$",
  "^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$",
  "^\\+[1-9][0-9]{6,14}$",
  "^([0-9]+(ns|us|ms|s|m|h))*$",
  "^([0-9]{1,19}-[0-9]{1,19})?$",
  "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$",
];

const platform = new Map(SCHEMA_PATTERNS.map((p) => [p, new RegExp(p, "u")]));
// As protovalidate's own matcher: compiled once, the cache reset if CEL ever builds patterns from input.
const re2 = new Map<string, RE2JS>();

export function patternMatches(pattern: string, against: string): boolean {
  const fast = platform.get(pattern);
  if (fast) return fast.test(against);
  let re = re2.get(pattern);
  if (re === undefined) {
    if (re2.size >= 1024) re2.clear();
    re = RE2JS.compile(pattern);
    re2.set(pattern, re);
  }
  return re.test(against);
}

export const requestValidator = (): Validator => createValidator({ regexMatch: patternMatches });
