/** The lifecycle of an account: created pending, active once registered, disabled by an administrator. */
export const identityStates = ["pending", "active", "disabled"] as const;
export type IdentityState = (typeof identityStates)[number];

/** An account of an organization. */
export interface Identity {
  id: string;
  orgId: string;
  /** As given at creation; matched case-insensitively. */
  username: string;
  state: IdentityState;
  createdAt: Date;
  registeredAt: Date | null;
  /** E.164, where codes handed to the SMS channel go; null when none. */
  phoneNumber: string | null;
}

/** How usernames are compared: trimmed and lower-cased. */
export const normalizeUsername = (username: string) => username.trim().toLowerCase();
