// OpenTelemetry traces, for every layer: the API only (no SDK), and nothing at
// all unless the process turned tracing on (server/tracing.ts). Off, each helper
// is a test of one boolean: no span, no context, no header parsed.
import { context, propagation, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span } from "@opentelemetry/api";

let enabled = false;

/** Called by server/tracing.ts once a tracer provider, context manager and propagator are registered. */
export function setTracingEnabled(on: boolean): void {
  enabled = on;
}

export function tracingEnabled(): boolean {
  return enabled;
}

const tracer = () => trace.getTracer("codegate");

export interface SpanOptions {
  kind?: SpanKind;
  attributes?: Attributes;
  /** The context the span continues (by default the active one). */
  parent?: Context;
}

/** Runs `work` in a span of its own, recording a thrown error; off, runs `work` alone. */
export function inSpan<T>(name: string, opts: SpanOptions, work: (span: Span | undefined) => Promise<T>): Promise<T> {
  if (!enabled) return work(undefined);
  const parent = opts.parent ?? context.active();
  return tracer().startActiveSpan(name, { kind: opts.kind, attributes: opts.attributes }, parent, async (span) => {
    try {
      return await work(span);
    } catch (err) {
      span.recordException(err instanceof Error ? err : String(err));
      span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : undefined });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Whether a span is active here: spans of a statement are made only inside a traced call. */
export function inTrace(): boolean {
  return enabled && trace.getActiveSpan() !== undefined;
}

/** The trace context of a caller's headers (`traceparent`, `tracestate`), or the root context. */
export function contextOf(headers: { get(name: string): string | null }): Context {
  return propagation.extract(context.active(), headers, {
    get: (carrier, key) => carrier.get(key) ?? undefined,
    keys: () => ["traceparent", "tracestate"],
  });
}

/** The active span as a W3C `traceparent`, to be carried with work done later (a queued mail); off or outside a trace, undefined. */
export function currentTraceparent(): string | undefined {
  if (!enabled) return undefined;
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier.traceparent;
}

/** The context a `traceparent` carried from earlier work continues. */
export function contextOfTraceparent(traceparent: string | undefined): Context | undefined {
  if (!enabled || !traceparent) return undefined;
  return propagation.extract(context.active(), { traceparent });
}

export { SpanKind };
