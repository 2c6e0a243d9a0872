/** A short human phrase for a failed HTTP request (`connection refused`, `host not found`, ...). */
export function networkReason(e: unknown): string {
  const err = e as { code?: unknown; name?: unknown; message?: unknown; cause?: { code?: unknown; message?: unknown } };
  const code = err.code ?? err.cause?.code;
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host not found';
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
      return 'connection reset';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'host unreachable';
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ETIMEDOUT':
      return 'connection timed out';
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return 'no answer in time';
  }
  if (typeof code === 'string' && /CERT|SSL|TLS/.test(code)) return `TLS: ${String(err.message ?? code)}`;
  if (err.name === 'AbortError' || err.name === 'TimeoutError') return 'timed out';
  const message = typeof err.message === 'string' ? err.message : String(e);
  return message.split('\n')[0]!.slice(0, 200);
}
