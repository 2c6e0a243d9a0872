/**
 * Child services on loopback: free ports, readiness polling, stop by PID.
 * Used by the test global setup and by `dvcr-importer up` (the embedded default).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** Asks the OS for a free TCP port on `host`. The port is free now; the caller binds it soon after. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('could not read the bound port'));
        return;
      }
      srv.close(() => resolve(addr.port));
    });
  });
}

/** A service process we started and own. */
export interface ServiceProcess {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. Idempotent. */
  stop(graceMs?: number): Promise<void>;
  /** Resolves when the process exits (for any reason). */
  readonly exited: Promise<number | null>;
}

export interface SpawnServiceOptions {
  name: string;
  command: string;
  args: string[];
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Never leave a service behind when the owning process exits.
  process.on('exit', () => {
    for (const child of live) {
      try {
        child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  });
}

export function spawnService(opts: SpawnServiceOptions): ServiceProcess {
  installExitHook();
  const fd = openSync(opts.logFile, 'a');
  const child = spawn(opts.command, opts.args, {
    stdio: ['ignore', fd, fd],
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  });
  closeSync(fd);
  if (child.pid === undefined) {
    throw new Error(`${opts.name}: could not start ${opts.command}`);
  }
  live.add(child);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      live.delete(child);
      resolve(code);
    });
    child.once('error', () => {
      live.delete(child);
      resolve(null);
    });
  });
  const pid = child.pid;
  let stopping: Promise<void> | undefined;
  return {
    name: opts.name,
    pid,
    logFile: opts.logFile,
    exited,
    stop(graceMs = 5000) {
      stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          return;
        }
        const timedOut = await Promise.race([exited.then(() => false), sleep(graceMs).then(() => true)]);
        if (timedOut) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
          await exited;
        }
      })();
      return stopping;
    },
  };
}

/** The last lines of a service log, for error messages. */
export function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Polls `probe` until it returns true, the process exits, or the deadline passes. */
export async function waitUntilReady(
  svc: ServiceProcess,
  probe: () => Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitedCode: number | null | undefined;
  void svc.exited.then((c) => {
    exitedCode = c;
  });
  let delay = 20;
  while (Date.now() < deadline) {
    if (exitedCode !== undefined) {
      throw new Error(`${svc.name} exited (code ${exitedCode}) before it was ready:\n${logTail(svc.logFile)}`);
    }
    if (await probe().catch(() => false)) {
      // A probe can be answered by another process on the same port while ours fails to bind: make sure
      // ours is still running a moment later.
      await sleep(50);
      if (exitedCode === undefined) return;
      continue;
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 250);
  }
  await svc.stop();
  throw new Error(`${svc.name} did not answer within ${timeoutMs} ms:\n${logTail(svc.logFile)}`);
}

/** Sends one line to host:port and resolves with the first reply (used for Redis PING). */
export function tcpRoundTrip(host: string, port: number, line: string, timeoutMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('timeout'));
    }, timeoutMs);
    sock.once('connect', () => sock.write(line));
    sock.once('data', (d) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(d.toString('utf8'));
    });
    sock.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}
