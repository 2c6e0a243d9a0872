/** A counting semaphore per host: at most `limit` requests in flight to one registry. */

export class Semaphore {
  private active = 0;
  private readonly waiters: Array<() => void> = [];
  constructor(readonly limit: number) {
    if (!(limit >= 1)) throw new RangeError('limit must be >= 1');
  }
  get inFlight(): number {
    return this.active;
  }
  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.active < this.limit) {
      this.active++;
      return this.releaser();
    }
    signal?.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      const wake = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(wake);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(wake);
    });
    // The slot was handed over by release(): active was not decremented.
    return this.releaser();
  }
  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiters.shift();
      if (next) next();
      else this.active--;
    };
  }
}

export class HostLimiter {
  private readonly byHost = new Map<string, Semaphore>();
  constructor(readonly perHost: number) {}
  for(host: string): Semaphore {
    let s = this.byHost.get(host);
    if (!s) {
      s = new Semaphore(this.perHost);
      this.byHost.set(host, s);
    }
    return s;
  }
}
