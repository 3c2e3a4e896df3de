import { pino, type Logger } from "pino";

export type { Logger };

/**
 * Paths that may hold a code, a token or a secret; pino replaces their values.
 * The code never logs request bodies or mail bodies in the first place; this is
 * the second line of defence.
 */
const redactPaths = [
  // Top level only: an error's `code` (errno, SQLSTATE) is what an operator needs.
  "code",
  "token",
  "*.token",
  "recoveryCode",
  "*.recoveryCode",
  "secret",
  "*.secret",
  "password",
  "*.password",
  "authorization",
  "*.authorization",
  "headers.authorization",
  "*.headers.authorization",
  "body",
  "*.body",
  "html",
  "*.html",
  "text",
  "*.text",
  // A failed statement's bind parameters (PGlite's errors carry them): usernames, hashes, sealed mail.
  "params",
  "*.params",
];

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: "codegate" },
      redact: { paths: redactPaths, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination as pino.DestinationStream | undefined,
  );
}
