// TLS session ticket keys: they encrypt the session state a client keeps in its
// ticket, which in TLS 1.2 is the session's master secret itself. Whoever holds a key
// can read every recorded TLS 1.2 session whose ticket it sealed, so a set lives for
// TLS_TICKET_KEY_ROTATION and is then forgotten: a ticket sealed under it no longer
// resumes, and its client makes a full handshake. `serve`'s primary draws the sets and
// hands them to its API workers over IPC (cluster.ts), so that a session resumes on
// whichever worker a connection lands.
import { randomBytes } from "node:crypto";

/** What tls.Server's setTicketKeys takes: a name, an HMAC key and an AES key, 16 bytes each. */
const TICKET_KEYS_BYTES = 48;

export interface TicketKeys {
  /** The set in use. */
  current(): Buffer;
  /** Calls `listener` with each new set; answers the function that stops the calls. */
  onChange(listener: (keys: Buffer) => void): () => void;
}

export interface SettableTicketKeys extends TicketKeys {
  set(keys: Buffer): void;
}

export interface RotatingTicketKeys extends TicketKeys {
  /** Ends the rotation. */
  stop(): void;
}

/** `keys`, once checked to be a whole set. */
function whole(keys: Buffer): Buffer {
  if (keys.length !== TICKET_KEYS_BYTES) throw new Error(`TLS session ticket keys: expected ${TICKET_KEYS_BYTES} bytes, got ${keys.length}`);
  return keys;
}

/** A set given from elsewhere (by `serve`'s primary), replaced by `set`. */
export function givenTicketKeys(first: Buffer): SettableTicketKeys {
  let keys = whole(first);
  const listeners = new Set<(keys: Buffer) => void>();
  return {
    current: () => keys,
    onChange(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    set(next) {
      const old = keys;
      keys = whole(next);
      for (const listener of listeners) listener(keys);
      // Taken by every listener: what is left of the old set here is wiped (OpenSSL has its own copy).
      old.fill(0);
    },
  };
}

/** A set drawn now, and a new one every `everyMs` (on a timer that keeps no process alive) until `stop`. */
export function rotatingTicketKeys(everyMs: number): RotatingTicketKeys {
  const keys = givenTicketKeys(randomBytes(TICKET_KEYS_BYTES));
  const rotation = setInterval(() => keys.set(randomBytes(TICKET_KEYS_BYTES)), everyMs);
  rotation.unref();
  return { current: keys.current, onChange: keys.onChange, stop: () => clearInterval(rotation) };
}
