/** Whether this run is CI's: the CI environment variable is set, and not to "false" or "0". */
export const inCi = (env: NodeJS.ProcessEnv = process.env): boolean => !!env.CI && !["false", "0"].includes(env.CI.toLowerCase());
