/** A redis-server of our own on a free loopback port, with its own data folder. */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, spawnService, tcpRoundTrip, waitUntilReady, type ServiceProcess } from './process.ts';

export interface RedisServerOptions {
  /** Folder for the log and, with `appendOnly`, the AOF files. Created if missing. */
  dataDir: string;
  host?: string;
  /** Fixed port; default: a free one chosen by the OS. */
  port?: number;
  /** Keep an append-only file (survives a restart on the same dataDir). Default false. */
  appendOnly?: boolean;
  /** Path or name of the redis-server binary. Default `redis-server` from PATH. */
  binary?: string;
}

export interface RedisServer {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly pid: number;
  readonly dataDir: string;
  readonly process: ServiceProcess;
  stop(): Promise<void>;
}

export async function startRedis(opts: RedisServerOptions): Promise<RedisServer> {
  const host = opts.host ?? '127.0.0.1';
  mkdirSync(opts.dataDir, { recursive: true });
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = opts.port ?? (await freePort(host));
    const svc = spawnService({
      name: `redis-server on ${host}:${port}`,
      command: opts.binary ?? 'redis-server',
      args: [
        '--bind', host,
        '--port', String(port),
        '--dir', opts.dataDir,
        '--save', '',
        '--appendonly', opts.appendOnly ? 'yes' : 'no',
        '--appendfsync', 'everysec',
        '--maxmemory-policy', 'noeviction',
        '--daemonize', 'no',
        '--protected-mode', 'yes',
        '--logfile', '',
      ],
      logFile: join(opts.dataDir, 'redis.log'),
    });
    try {
      // INFO names the answering server's pid: a server of someone else's on the same port does not count.
      await waitUntilReady(svc, async () =>
        (await tcpRoundTrip(host, port, 'INFO server\r\n')).includes(`process_id:${svc.pid}\r\n`),
      );
    } catch (e) {
      lastError = e;
      await svc.stop();
      if (opts.port !== undefined) break;
      continue;
    }
    return {
      url: `redis://${host}:${port}`,
      host,
      port,
      pid: svc.pid,
      dataDir: opts.dataDir,
      process: svc,
      stop: () => svc.stop(),
    };
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}
