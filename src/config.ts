/**
 * One validated configuration object, read from the environment (and an optional JSON/YAML file named by
 * DVCR_IMPORTER_CONFIG; environment wins). Every value has a documented default; a bad value is rejected with
 * a message naming the variable.
 *
 * Secrets (DVCR_PASSWORD, API_TOKEN, pull secrets) are read here and never copied into jobs, logs or errors.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { parseCidr } from './oci/address-policy.ts';

const hostPortList = z
  .string()
  .transform((s) =>
    s
      .split(',')
      .map((x) => x.trim().toLowerCase())
      .filter(Boolean),
  );

/**
 * Longest accepted duration: Node's timer limit (2^31-1 ms, about 596 hours). A longer delay given to setTimeout
 * fires after 1 ms instead, so it is refused here rather than silently turned into "at once".
 */
export const MAX_DURATION_MS = 2 ** 31 - 1;

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** Milliseconds: a number, or a decimal number with a unit (ms, s, m, h; none = ms). 0 to MAX_DURATION_MS. */
const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  let ms: number;
  if (typeof v === 'number') ms = v;
  else {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
    if (!m) {
      ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration like 500ms, 30s, 10m, 1h` });
      return z.NEVER;
    }
    ms = Number(m[1]) * DURATION_UNITS[(m[2] ?? 'ms') as keyof typeof DURATION_UNITS];
  }
  const rounded = Math.round(ms);
  if (!Number.isFinite(ms) || ms < 0 || rounded > MAX_DURATION_MS) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is out of range: a duration must be between 0 and 596h (${MAX_DURATION_MS} ms)` });
    return z.NEVER;
  }
  return rounded;
});

const SIZE_UNITS: Record<string, number> = {
  '': 1, k: 1e3, Ki: 1024, M: 1e6, Mi: 1024 ** 2, G: 1e9, Gi: 1024 ** 3, T: 1e12, Ti: 1024 ** 4, P: 1e15, Pi: 1024 ** 5,
};

/**
 * Bytes: a number, or a decimal number with an optional unit (k, Ki, M, Mi, G, Gi, T, Ti, P, Pi: what formatBytes
 * prints reads back) and an optional B. At most 2^53-1 (about 8Pi).
 */
const size = z.union([z.number(), z.string()]).transform((v, ctx) => {
  let bytes: number;
  if (typeof v === 'number') bytes = v;
  else {
    const m = /^(\d+(?:\.\d+)?)\s*(|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi)B?$/.exec(v.trim());
    if (!m) {
      ctx.addIssue({ code: 'custom', message: `"${v}" is not a size like 512Mi, 20Gi, 1T` });
      return z.NEVER;
    }
    bytes = Number(m[1]) * SIZE_UNITS[m[2]!]!;
  }
  const rounded = Math.round(bytes);
  if (!Number.isFinite(bytes) || bytes < 0 || !Number.isSafeInteger(rounded)) {
    ctx.addIssue({
      code: 'custom',
      message: `"${v}" is out of range: a size must be between 0 and ${Number.MAX_SAFE_INTEGER} bytes (about 8Pi)`,
    });
    return z.NEVER;
  }
  return rounded;
});

/** Comma-separated CIDRs (or a YAML list), each validated and kept in canonical text. */
const cidrList = z.union([z.string(), z.array(z.string())]).transform((v, ctx) => {
  const items = (typeof v === 'string' ? v.split(',') : v).map((x) => x.trim()).filter(Boolean);
  const out: string[] = [];
  for (const item of items) {
    try {
      out.push(parseCidr(item).text);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  }
  return out;
});

const listen = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:]+):\d{1,5}$/, 'must be HOST:PORT, e.g. 127.0.0.1:8080');

export const ConfigSchema = z.object({
  /** Redis for the queue and the image store. */
  redisUrl: z.string().url().default('redis://127.0.0.1:6379'),
  /** Key prefix; contains a Redis Cluster hash tag so all keys share one slot. */
  redisPrefix: z.string().regex(/\{[^}]+\}/, 'must contain a {hash-tag}').default('{dvcr}'),
  /** DVCR base URL: http://host:port or https://host. */
  dvcrUrl: z.string().url().default('http://127.0.0.1:5000'),
  dvcrUsername: z.string().optional(),
  dvcrPassword: z.string().optional(),
  /** A dockerconfigjson file with DVCR credentials (instead of user/password). */
  dvcrAuthFile: z.string().optional(),
  /** PEM CA bundle file for DVCR. */
  dvcrCaFile: z.string().optional(),
  /** host:port entries that may be reached over plain http or without TLS verification. */
  insecureRegistries: hostPortList.default([]),
  /** Folder of dockerconfigjson files, one per pull secret: `<name>` or `<namespace>/<name>`(.json). */
  pullSecretsDir: z.string().optional(),
  /** API listen address. */
  listen: listen.default('127.0.0.1:8080'),
  /** Bearer token the API requires (operator role). Empty: no auth (loopback use). */
  apiToken: z.string().optional(),
  /** Bearer token with read-only access to the API (GET only). */
  apiReadToken: z.string().optional(),
  /** Public base URL of the API, for upload URLs shown to users. */
  publicUrl: z.string().url().optional(),
  /** An Upload image whose upload has not started this long after WaitForUserUpload fails (WaitForUserUploadTimeout). */
  uploadTimeout: duration.default(600_000),
  /** Jobs a worker process runs at once. */
  workerConcurrency: z.coerce.number().int().min(1).max(64).default(2),
  /** BullMQ job lock: renewed at half this period; a worker silent for longer loses its job to another. */
  jobLockDuration: duration.default(60_000),
  /** Attempts per import before it fails for good. */
  importAttempts: z.coerce.number().int().min(1).max(100).default(8),
  /** Largest virtual size accepted. */
  maxVirtualSize: size.default(2 * 1024 ** 4),
  /** Bytes of the disk kept for qemu-img to probe. */
  probeSampleSize: size.default(64 * 1024 ** 2),
  /** Requests in flight per registry host. */
  registryConcurrency: z.coerce.number().int().min(1).max(64).default(6),
  /** A download that receives nothing for this long fails. */
  idleTimeout: duration.default(600_000),
  /**
   * How long one source request may wait out 429 answers (Retry-After) itself; past that the import is delayed
   * through the queue instead, which frees the worker and spends no attempt.
   */
  rateLimitWait: duration.default(300_000),
  /**
   * Non-public addresses that sources (HTTP URLs, source registries; not DVCR) may be fetched from. By default
   * loopback, link-local, private, CGNAT, unspecified, multicast and cloud metadata addresses are refused.
   */
  sourceAllowCidrs: cidrList.default([]),
  /** SIGTERM: how long running imports may take to finish before they are handed back to the queue. */
  shutdownDeadline: duration.default(25_000),
  /** Ours: convert every imported disk to this format (an image's `spec.conversion.format` wins); unset = keep. */
  convertTo: z.enum(['qcow2', 'raw']).optional(),
  /** Wall-clock limit of one `qemu-img convert`; it is killed (and the attempt retried) when reached. */
  convertTimeout: duration.default(3_600_000),
  /** How often an ObjectRef import whose source image is not Ready yet looks again (no attempt is spent). */
  sourceWaitInterval: duration.default(10_000),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = z.infer<typeof ConfigSchema>;

/** Environment variable for each field (the documented contract for scripts). */
export const ENV: Record<keyof Config, string> = {
  redisUrl: 'REDIS_URL',
  redisPrefix: 'REDIS_PREFIX',
  dvcrUrl: 'DVCR_URL',
  dvcrUsername: 'DVCR_USERNAME',
  dvcrPassword: 'DVCR_PASSWORD',
  dvcrAuthFile: 'DVCR_AUTH_FILE',
  dvcrCaFile: 'DVCR_CA_FILE',
  insecureRegistries: 'INSECURE_REGISTRIES',
  pullSecretsDir: 'PULL_SECRETS_DIR',
  listen: 'LISTEN',
  apiToken: 'API_TOKEN',
  apiReadToken: 'API_READ_TOKEN',
  publicUrl: 'PUBLIC_URL',
  uploadTimeout: 'UPLOAD_TIMEOUT',
  workerConcurrency: 'WORKER_CONCURRENCY',
  importAttempts: 'IMPORT_ATTEMPTS',
  jobLockDuration: 'JOB_LOCK_DURATION',
  maxVirtualSize: 'MAX_VIRTUAL_SIZE',
  probeSampleSize: 'PROBE_SAMPLE_SIZE',
  registryConcurrency: 'REGISTRY_CONCURRENCY',
  idleTimeout: 'IDLE_TIMEOUT',
  rateLimitWait: 'RATE_LIMIT_WAIT',
  sourceAllowCidrs: 'SOURCE_ALLOW_CIDRS',
  shutdownDeadline: 'SHUTDOWN_DEADLINE',
  convertTo: 'CONVERT_TO',
  convertTimeout: 'CONVERT_TIMEOUT',
  sourceWaitInterval: 'SOURCE_WAIT_INTERVAL',
  logLevel: 'LOG_LEVEL',
};

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Reads the configuration: file (DVCR_IMPORTER_CONFIG) < environment < `overrides`. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Record<keyof Config, unknown>> = {}): Config {
  let fromFile: Record<string, unknown> = {};
  const file = env.DVCR_IMPORTER_CONFIG;
  if (file) {
    try {
      const parsed: unknown = parseYaml(readFileSync(file, 'utf8'));
      if (parsed && typeof parsed === 'object') fromFile = parsed as Record<string, unknown>;
    } catch (e) {
      throw new ConfigError(`DVCR_IMPORTER_CONFIG=${file}: ${(e as Error).message}`);
    }
  }
  const raw: Record<string, unknown> = { ...fromFile };
  for (const [key, name] of Object.entries(ENV)) {
    const v = env[name];
    if (v !== undefined && v !== '') raw[key] = v;
  }
  Object.assign(raw, Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)));
  const r = ConfigSchema.safeParse(raw);
  if (!r.success) {
    const lines = r.error.issues.map((i) => {
      const key = String(i.path[0] ?? '');
      const name = ENV[key as keyof Config] ?? key;
      // Never echo secret values.
      return `${name}: ${i.message}`;
    });
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  return r.data;
}

/** `host:port` of DVCR as used in image references and status.target.registryURL. */
export function dvcrHost(config: Pick<Config, 'dvcrUrl'>): string {
  return new URL(config.dvcrUrl).host;
}

/** DVCR reached over plain http is insecure by definition. */
export function effectiveInsecureRegistries(config: Pick<Config, 'dvcrUrl' | 'insecureRegistries'>): string[] {
  const out = new Set(config.insecureRegistries);
  const u = new URL(config.dvcrUrl);
  if (u.protocol === 'http:') out.add(u.host.toLowerCase());
  return [...out];
}
