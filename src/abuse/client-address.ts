import type { ContextValues } from "@connectrpc/connect";
import { clientAddressKey, forwardedForKey } from "../transport/rpc.ts";

const bare = (address: string) => address.replace(/^::ffff:/, "").trim();

/**
 * The client's address: the socket's peer, or, when that peer is a trusted
 * proxy, the nearest address in X-Forwarded-For that is not one of the proxies.
 */
export function clientAddress(values: ContextValues, trustedProxies: readonly string[]): string {
  const peer = bare(values.get(clientAddressKey));
  if (!trustedProxies.includes(peer)) return peer;
  const hops = values.get(forwardedForKey).split(",").map(bare).filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) if (!trustedProxies.includes(hops[i])) return hops[i];
  return peer;
}
