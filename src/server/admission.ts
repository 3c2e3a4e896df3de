// Which connections the listener takes. At most MAX_CONNECTIONS are open, of which one
// client address (an IPv4 address or an IPv6 /64; trusted proxies' are not counted)
// holds MAX_CONNECTIONS_PER_ADDRESS; with TLS, one address opens at most
// MAX_TLS_HANDSHAKES_PER_ADDRESS a second. Each refusal is counted, and logged at most
// once a minute per limit.
import type net from "node:net";
import { addressKey, parseAddress, type TrustedProxies } from "../lib/address.ts";
import { CountsByKey, CountsInWindow } from "../lib/counts.ts";
import { lineThrottle } from "../lib/line-throttle.ts";
import type { Logger } from "../lib/log.ts";

/** Refused connections are logged at most this often (each is counted): a flood of them must not flood the log. */
const REFUSAL_LOG_MS = 60_000;

/** Why a connection was refused: every `MAX_CONNECTIONS` place taken, its address's share, or its address's handshakes this second. */
export type RefusalReason = "max_connections" | "max_connections_per_address" | "max_tls_handshakes_per_address";

export interface AdmissionOptions {
  /** Open connections at most; more are refused. */
  maxConnections: number;
  /** Open connections of one client address at most (an IPv6 /64); trusted proxies' are not counted. */
  maxConnectionsPerAddress: number;
  /** With TLS: handshakes one client address (an IPv6 /64) may begin in a second; 0 for no limit. Trusted proxies' are not counted. */
  maxTlsHandshakesPerAddress?: number;
  trustedProxies: TrustedProxies;
  log: Pick<Logger, "warn">;
  /** Counts a refused connection. */
  refused: (reason: RefusalReason) => void;
}

/**
 * Reports a refused connection: counted each time, and logged (warn) the first
 * time and then at most once per REFUSAL_LOG_MS per reason, with how many were
 * refused in between, so that an operator sees clients turned away.
 */
export function refusalReporter(
  opts: Pick<AdmissionOptions, "refused" | "maxConnections" | "maxConnectionsPerAddress" | "maxTlsHandshakesPerAddress" | "log">,
  clock: () => number = () => performance.now(),
): (reason: RefusalReason, address: string) => void {
  const mayLog = lineThrottle<RefusalReason>(REFUSAL_LOG_MS, clock);
  return (reason, address) => {
    opts.refused(reason);
    const heldBack = mayLog(reason);
    if (heldBack === undefined) return;
    const limit = {
      max_connections: `MAX_CONNECTIONS (${opts.maxConnections})`,
      max_connections_per_address: `MAX_CONNECTIONS_PER_ADDRESS (${opts.maxConnectionsPerAddress})`,
      max_tls_handshakes_per_address: `MAX_TLS_HANDSHAKES_PER_ADDRESS (${opts.maxTlsHandshakesPerAddress} a second)`,
    }[reason];
    opts.log.warn({ reason, address, refusedSinceLastLine: heldBack }, `connection refused: ${limit} reached; logged at most once a minute, counted in codegate_connections_refused_total`);
  };
}

/**
 * Whether to take a new connection, given how many are open (`open`) and whether each is a
 * TLS handshake (`secured`); a connection taken counts for its address until it closes.
 */
export function connectionAdmission(opts: AdmissionOptions, secured: boolean, open: () => number): (socket: net.Socket) => boolean {
  const refuse = refusalReporter(opts);
  // Connections open per client address: one source must not take every MAX_CONNECTIONS place.
  const fromAddress = new CountsByKey();
  // A full TLS handshake costs the server about a millisecond of CPU: one source opening
  // connections in a loop must not take every core (its open ones are bounded above).
  const handshakesFrom = new CountsInWindow(1_000);
  const maxHandshakes = secured && opts.maxTlsHandshakesPerAddress ? opts.maxTlsHandshakesPerAddress : Infinity;
  return (socket) => {
    // A peer gone before its connection came to this callback has no address left: nothing to
    // serve, and it must not count under an address "" that every such socket would share.
    if (!socket.remoteAddress) return false;
    const address = parseAddress(socket.remoteAddress);
    const key = addressKey(address);
    // Counted here rather than by net.Server's maxConnections: in a cluster's worker, that
    // one hands a connection it refuses back to the primary, which offers it to the next.
    if (open() >= opts.maxConnections) {
      refuse("max_connections", key);
      return false;
    }
    if (opts.trustedProxies.has(address)) return true;
    if (fromAddress.of(key) >= opts.maxConnectionsPerAddress) {
      refuse("max_connections_per_address", key);
      return false;
    }
    if (maxHandshakes !== Infinity && handshakesFrom.add(key) > maxHandshakes) {
      refuse("max_tls_handshakes_per_address", key);
      return false;
    }
    socket.once("close", fromAddress.add(key));
    return true;
  };
}
