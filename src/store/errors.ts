// What a database error means for the caller: the database is out of reach (try
// again later), a statement ran out of time, or something else (a bug).

/** SQLSTATE codes of a transaction that lost to another: a retry may succeed. */
const lostToAnotherStates = new Set([
  "40001", // serialization_failure
  "40P01", // deadlock_detected
]);

/** SQLSTATE codes of a database that cannot serve right now. */
const unavailableStates = new Set([
  "08000", // connection_exception
  "08001", // sqlclient_unable_to_establish_sqlconnection
  "08003", // connection_does_not_exist
  "08004", // sqlserver_rejected_establishment_of_sqlconnection
  "08006", // connection_failure
  "08007", // transaction_resolution_unknown
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
  "53300", // too_many_connections
  "53400", // configuration_limit_exceeded
  ...lostToAnotherStates,
]);
const unavailableSocketErrors = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "";
}

/** Whether `err` says the database is unreachable or cannot serve now; a retry later may succeed. */
export function isDatabaseUnavailable(err: unknown): boolean {
  const code = codeOf(err);
  if (unavailableStates.has(code) || unavailableSocketErrors.has(code)) return true;
  const message = err instanceof Error ? err.message : "";
  // node-postgres reports a lost connection and a pool wait that timed out with messages only.
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|Connection ended unexpectedly/i.test(message);
}

/**
 * Whether `err` is a transaction that reached the database and lost to another
 * (a deadlock's victim, a serialization failure): answered as unavailable (a
 * retry may succeed), but unlike a database out of reach, its statements ran and
 * may have held rows until it rolled back.
 */
export const isLostToAnother = (err: unknown) => lostToAnotherStates.has(codeOf(err));

/** Whether `err` is a statement cancelled by statement_timeout. */
export const isStatementTimeout = (err: unknown) => codeOf(err) === "57014";
