/** The OCI distribution client. Imports nothing of the rest of the project. */
export { RegistryClient, type RegistryClientOptions, type ResolvedImage, type ManifestHead } from './client.ts';
export {
  OciError,
  isOciError,
  errorFromResponse,
  errorFromNetwork,
  parseRetryAfter,
  type ErrorClass,
  type SerializedOciError,
} from './errors.ts';
export {
  parseReference,
  formatReference,
  apiHost,
  manifestReference,
  isDigest,
  isValidRepository,
  isValidTag,
  type ImageReference,
} from './reference.ts';
export {
  MediaType,
  MANIFEST_ACCEPT,
  MANIFEST_PUT_LIMIT,
  MANIFEST_READ_LIMIT,
  parseManifest,
  parsePlatform,
  formatPlatform,
  normalisePlatform,
  selectPlatform,
  type Descriptor,
  type ImageManifest,
  type ImageIndex,
  type Manifest,
  type Platform,
} from './manifest.ts';
export { parseChallenges, type Challenge } from './challenge.ts';
export { anonymous, mergeScopes, repositoryScope, type Credentials, type CredentialProvider } from './auth.ts';
export { DEFAULT_RETRY, backoffDelay, withRetry, type RetryPolicy } from './retry.ts';
export { digestOf, parseDigest, DigestCounter } from './digest.ts';
export type { BlobSource, UploadOptions, UploadResult } from './blob-upload.ts';
export type { BlobReadOptions } from './blob-reader.ts';
export type { HostOptions, TransportOptions } from './transport.ts';
export {
  AddressPolicy,
  classifyAddress,
  cidrContains,
  embeddedV4,
  guardedConnector,
  guardedLookup,
  parseCidr,
  parseCidrList,
  parseIp,
  type AddressCategory,
  type AddressVerdict,
  type Cidr,
  type IpAddress,
} from './address-policy.ts';
export { parseDockerConfig, readDockerConfigFile, credentialsFromMap, credentialsForHost, authKeyHost } from './dockerconfig.ts';
