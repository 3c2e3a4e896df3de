// grpc-js streaming calls (server-streaming and bidi), serialized with the
// generated protobuf-es code, as a grpc-js caller of another team would make them.
import { fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape, create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";

function codec<D extends DescMessage>(desc: D) {
  return {
    serialize: (msg: MessageShape<D>) => Buffer.from(toBinary(desc, msg)),
    deserialize: (buf: Buffer) => fromBinary(desc, buf),
  };
}

function genericClient(address: string, path: string, input: DescMessage, output: DescMessage, requestStream: boolean) {
  const i = codec(input);
  const o = codec(output);
  const Ctor = grpc.makeGenericClientConstructor(
    {
      call: {
        path,
        requestStream,
        responseStream: true,
        requestSerialize: i.serialize,
        requestDeserialize: i.deserialize,
        responseSerialize: o.serialize,
        responseDeserialize: o.deserialize,
      },
    },
    "Generic",
  );
  return new Ctor(address.replace(/^https?:\/\//, ""), grpc.credentials.createInsecure());
}

/** Collects the messages of a response stream and tells how it ended. */
export class ResponseStream<T> {
  readonly messages: T[] = [];
  readonly ended: Promise<grpc.StatusObject>;
  #status: grpc.StatusObject | undefined;
  /** Called on each message and at the end of the stream. */
  readonly #listeners = new Set<() => void>();

  constructor(stream: grpc.ClientReadableStream<T> | grpc.ClientDuplexStream<unknown, T>) {
    stream.on("data", (m: T) => {
      this.messages.push(m);
      for (const l of [...this.#listeners]) l();
    });
    this.ended = new Promise((resolve) => {
      stream.on("status", (s: grpc.StatusObject) => {
        this.#status = s;
        resolve(s);
        for (const l of [...this.#listeners]) l();
      });
      stream.on("error", () => {});
    });
  }

  /**
   * Resolves with the n-th message (1-based) once it has arrived; rejects as soon as
   * the stream ends without it, or after timeoutMs.
   */
  nth(n: number, timeoutMs = 10_000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = () => {
        if (this.messages.length >= n) finish(() => resolve(this.messages[n - 1]));
        else if (this.#status) finish(() => reject(new Error(`the stream ended (${this.#status!.code} ${this.#status!.details}) after ${this.messages.length} messages, before message ${n}`)));
      };
      const timer = setTimeout(
        () => finish(() => reject(new Error(`message ${n} did not arrive within ${timeoutMs} ms (got ${this.messages.length})`))),
        timeoutMs,
      );
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        this.#listeners.delete(check);
        settle();
      };
      this.#listeners.add(check);
      check();
    });
  }
}

export function serverStream<I extends DescMessage, O extends DescMessage>(
  address: string,
  path: string,
  input: I,
  output: O,
  req: MessageInitShape<I>,
  headers: Record<string, string> = {},
) {
  const client = genericClient(address, path, input, output, false);
  const metadata = new grpc.Metadata();
  for (const [name, value] of Object.entries(headers)) metadata.set(name, value);
  const call = (client as any).call(create(input, req), metadata) as grpc.ClientReadableStream<MessageShape<O>>;
  return {
    responses: new ResponseStream<MessageShape<O>>(call),
    cancel: () => call.cancel(),
    close: () => client.close(),
  };
}

export function bidiStream<I extends DescMessage, O extends DescMessage>(address: string, path: string, input: I, output: O) {
  const client = genericClient(address, path, input, output, true);
  const call = (client as any).call() as grpc.ClientDuplexStream<MessageShape<I>, MessageShape<O>>;
  const responses = new ResponseStream<MessageShape<O>>(call);
  return {
    responses,
    /** Sends one request and waits for its answer (the server answers each request in order). */
    async ask(req: MessageInitShape<I>): Promise<MessageShape<O>> {
      const n = responses.messages.length + 1;
      call.write(create(input, req));
      return responses.nth(n);
    },
    end: () => call.end(),
    close: () => client.close(),
  };
}
