export { freePort, spawnService, waitUntilReady, logTail, type ServiceProcess } from './process.ts';
export { startRedis, type RedisServer, type RedisServerOptions } from './redis.ts';
export {
  startRegistry,
  findRegistryBinary,
  type RegistryServer,
  type RegistryOptions,
  type RegistryAuth,
} from './registry.ts';
