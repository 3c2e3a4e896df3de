// A TCP proxy in front of the suite's PostgreSQL, so that a test can take the
// database away from one server (its connections reset, new ones refused) and
// give it back, without stopping the PostgreSQL the other test files share.
import net from "node:net";

export class TcpProxy {
  readonly #target: { host: string; port: number };
  readonly #sockets = new Set<net.Socket>();
  #server: net.Server | undefined;
  #port = 0;

  private constructor(target: { host: string; port: number }) {
    this.#target = target;
  }

  /** A proxy to `targetUrl`'s host and port; answers it and the URL through it. */
  static async to(targetUrl: string): Promise<{ proxy: TcpProxy; url: string }> {
    const target = new URL(targetUrl);
    const proxy = new TcpProxy({ host: target.hostname, port: Number(target.port) });
    await proxy.open();
    target.port = String(proxy.#port);
    return { proxy, url: target.toString() };
  }

  /** Accepts connections again, on the same port. */
  async open(): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.#target.port, this.#target.host);
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.once("close", () => this.#sockets.delete(s));
        s.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#port, "127.0.0.1", () => resolve());
    });
    this.#port = (server.address() as net.AddressInfo).port;
    this.#server = server;
  }

  /** The database goes away: open connections are reset, new ones refused. */
  async cut(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const s of this.#sockets) s.resetAndDestroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async close(): Promise<void> {
    await this.cut();
  }
}
