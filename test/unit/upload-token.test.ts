import { describe, expect, it } from 'vitest';
import { formatDuration, reachableUrl } from '../../src/api/uploads.ts';
import { redactUploadUrl } from '../../src/api/routes-upload.ts';
import { isTokenShaped, newUploadToken, UPLOAD_TOKEN_LENGTH } from '../../src/images/upload-tokens.ts';

describe('upload tokens', () => {
  it('are 32 alphanumerics, all different, every character used', () => {
    const tokens = Array.from({ length: 2000 }, () => newUploadToken());
    for (const t of tokens) expect(t).toMatch(/^[A-Za-z0-9]{32}$/);
    expect(new Set(tokens).size).toBe(tokens.length);
    const seen = new Set(tokens.join(''));
    expect(seen.size).toBe(62);
    expect(UPLOAD_TOKEN_LENGTH).toBeGreaterThanOrEqual(32);
  });

  it('filters what cannot be a token before any lookup', () => {
    expect(isTokenShaped(newUploadToken())).toBe(true);
    expect(isTokenShaped('short')).toBe(false);
    expect(isTokenShaped(`${'a'.repeat(31)}-`)).toBe(false);
    expect(isTokenShaped('a'.repeat(300))).toBe(false);
  });

  it('never shows in request logs', () => {
    expect(redactUploadUrl('/upload/AbC123xyz')).toBe('/upload/<redacted>');
    expect(redactUploadUrl('/upload/AbC123xyz/more?x=1')).toBe('/upload/<redacted>/more?x=1');
    expect(redactUploadUrl('/apis/v1/clustervirtualimages')).toBe('/apis/v1/clustervirtualimages');
  });
});

describe('upload URLs and messages', () => {
  it('formats the timeout the way it is configured', () => {
    expect(formatDuration(600_000)).toBe('10m');
    expect(formatDuration(2000)).toBe('2s');
    expect(formatDuration(1500)).toBe('1500ms');
  });

  it('shows a wildcard listen address as this host', () => {
    expect(reachableUrl('http://127.0.0.1:8080')).toBe('http://127.0.0.1:8080');
    expect(reachableUrl('http://0.0.0.0:8080/')).not.toContain('0.0.0.0');
    expect(reachableUrl('http://[::]:8080')).not.toContain('[::]');
  });
});
