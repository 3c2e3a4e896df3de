/** What a code proves. Each purpose has its own code policy and its own live codes. */
export type Purpose = "login" | "registration" | "recovery";

export const purposes: readonly Purpose[] = ["login", "registration", "recovery"];
