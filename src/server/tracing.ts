// Turns tracing on in this process when OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, or a test hands in an exporter:
// W3C trace context in and out, async context across awaits, spans batched
// to the OTLP/HTTP exporter. Without either, nothing is registered and every
// helper of lib/tracing.ts stays a no-op.
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, SimpleSpanProcessor, TracerProvider, type SpanExporter } from "@opentelemetry/sdk-trace";
import type { Config } from "../config/config.ts";
import { setTracingEnabled } from "../lib/tracing.ts";

export interface Tracing {
  /** Exports what is pending and unregisters. */
  stop(): Promise<void>;
}

let active: { provider: TracerProvider; users: number } | undefined;

/** `exporter`: a test's (spans exported one by one, at once); else OTLP when configured. */
export function startTracing(config: Pick<Config, "tracing">, role: string, exporter?: SpanExporter): Tracing | undefined {
  if (!exporter && !config.tracing.endpoint) return undefined;
  if (!active) {
    const provider = new TracerProvider({
      resource: resourceFromAttributes({ "service.name": config.tracing.serviceName, "codegate.role": role }),
      spanProcessors: [exporter ? new SimpleSpanProcessor({ exporter }) : new BatchSpanProcessor({ exporter: new OTLPTraceExporter() })],
    });
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    trace.setGlobalTracerProvider(provider);
    setTracingEnabled(true);
    active = { provider, users: 0 };
  }
  const mine = active;
  mine.users++;
  let stopped = false;
  return {
    async stop() {
      if (stopped) return;
      stopped = true;
      if (--mine.users > 0) return;
      setTracingEnabled(false);
      active = undefined;
      await mine.provider.shutdown();
      trace.disable();
      propagation.disable();
      context.disable();
    },
  };
}
