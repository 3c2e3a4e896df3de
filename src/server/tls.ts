// TLS on the listening port (TLS_CERT_FILE, TLS_KEY_FILE): the certificate chain
// and its key are read at start, and read again when either file changes on disk
// (a renewal), so that no restart is needed; a pair that does not load keeps the
// one in use, with a warning. Connections made before a change keep their context.
// The session ticket keys go with them (ticket-keys.ts).
import { readFileSync, statSync } from "node:fs";
import tls from "node:tls";
import { DEFAULT_TICKET_KEY_ROTATION_MS } from "../config/config.ts";
import { ConfigError } from "../config/env.ts";
import type { Logger } from "../lib/log.ts";
import { rotatingTicketKeys, type TicketKeys } from "./ticket-keys.ts";

/** How often the files are looked at for a change. */
const RELOAD_CHECK_MS = 60_000;

export interface TlsFiles {
  certFile: string;
  keyFile: string;
  /** How long a set of session ticket keys is used (TLS_TICKET_KEY_ROTATION; an hour when not given). */
  ticketKeyRotationMs?: number;
}

export interface ServerTls {
  /** The certificate chain and key in use, as tls.createServer and its setSecureContext take them. */
  current(): tls.SecureContextOptions;
  /** Calls `listener` with the new pair after each reload. */
  onReload(listener: (options: tls.SecureContextOptions) => void): void;
  /** The session ticket keys, as they rotate. */
  ticketKeys: TicketKeys;
  /** Stops looking at the files, and rotating the ticket keys it drew. */
  close(): void;
}

function read(setting: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError([`${setting}: cannot read ${path}: ${(err as Error).message}`]);
  }
}

/** The pair in the files, checked; throws a ConfigError, naming the setting, when they cannot be read or do not make a certificate and its key. */
export function loadTlsFiles(files: TlsFiles): tls.SecureContextOptions {
  const options = { cert: read("TLS_CERT_FILE", files.certFile), key: read("TLS_KEY_FILE", files.keyFile), minVersion: "TLSv1.2" as const };
  try {
    tls.createSecureContext(options);
  } catch (err) {
    throw new ConfigError([`TLS_CERT_FILE, TLS_KEY_FILE: expected a PEM certificate chain and its private key: ${(err as Error).message}`]);
  }
  return options;
}

/** When the files last changed, as one comparable string; undefined when either cannot be looked at. */
function changedAt(files: TlsFiles): string | undefined {
  try {
    return [files.certFile, files.keyFile].map((f) => statSync(f).mtimeMs).join(",");
  } catch {
    return undefined;
  }
}

export interface ServerTlsOptions {
  /** How often the files are looked at (a minute). */
  checkEveryMs?: number;
  /** The ticket keys of serve's primary; without them, drawn here and rotated. */
  ticketKeys?: TicketKeys;
}

/** Loads the files (throwing as loadTlsFiles does) and takes their changes from then on; `close` ends the look. */
export function serverTls(files: TlsFiles, log: Logger, { checkEveryMs = RELOAD_CHECK_MS, ticketKeys: sharedTicketKeys }: ServerTlsOptions = {}): ServerTls {
  let options = loadTlsFiles(files);
  let loadedAt = changedAt(files);
  const listeners: ((options: tls.SecureContextOptions) => void)[] = [];
  const look = setInterval(() => {
    const now = changedAt(files);
    if (now === undefined || now === loadedAt) return;
    loadedAt = now;
    try {
      options = loadTlsFiles(files);
    } catch (err) {
      return void log.warn({ err: (err as Error).message }, "TLS certificate changed on disk but does not load; the previous one stays in use");
    }
    for (const listener of listeners) listener(options);
    log.info({ certFile: files.certFile }, "TLS certificate reloaded");
  }, checkEveryMs);
  look.unref();
  const ownTicketKeys = sharedTicketKeys ? undefined : rotatingTicketKeys(files.ticketKeyRotationMs ?? DEFAULT_TICKET_KEY_ROTATION_MS);
  return {
    current: () => options,
    onReload: (listener) => void listeners.push(listener),
    ticketKeys: sharedTicketKeys ?? ownTicketKeys!,
    close() {
      clearInterval(look);
      ownTicketKeys?.stop();
    },
  };
}
