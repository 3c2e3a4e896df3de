// What the rules refuse, in the rules' own words. The services turn each into
// the Connect code and details a caller sees (services/errors.ts); nothing below
// the services knows of Connect.

export class DomainError extends Error {}

/** The one answer for a wrong, expired, used, locked or unknown code. */
export class InvalidCode extends DomainError {
  constructor() {
    super("the code is wrong or no longer valid; ask for a new one");
  }
}

/** Over a rate limit: the request would be allowed again after `retryAfterMs`. */
export class RateLimited extends DomainError {
  readonly retryAfterMs: number;
  constructor(retryAfterMs: number) {
    super(`too many requests; try again in ${Math.ceil(retryAfterMs / 1000)} s`);
    this.retryAfterMs = retryAfterMs;
  }
}

/** A request field that is not what was expected. */
export class InvalidArgument extends DomainError {
  readonly field: string;
  constructor(field: string, expected: string) {
    super(`${field}: ${expected}`);
    this.field = field;
  }
}

export class NotFound extends DomainError {
  constructor(what: string) {
    super(`${what} not found`);
  }
}

export class AlreadyExists extends DomainError {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.field = field;
  }
}

export class FailedPrecondition extends DomainError {}

export class PermissionDenied extends DomainError {}
