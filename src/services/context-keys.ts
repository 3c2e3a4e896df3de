// What a call carries from the server to the services, besides its request
// message: set by the server for each call (server/rpc.ts).
import { createContextKey } from "@connectrpc/connect";

export const requestIdKey = createContextKey<string>("", { description: "request id" });
/** The caller's address, as the per-address limits count it (lib/address.ts). */
export const clientAddressKey = createContextKey<string>("", { description: "client address" });
export const adminTokenIdKey = createContextKey<string>("", { description: "admin token id" });
/** When the call's bound passes (`performance.now()` time): a call that waits for something answers before it. */
export const callDeadlineKey = createContextKey<number>(Number.POSITIVE_INFINITY, { description: "call deadline" });
