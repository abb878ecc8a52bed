/**
 * AWS Signature Version 4 for S3 requests, as nydusd's s3 backend signs them: every header of the
 * request (Host, Range, x-amz-date, x-amz-content-sha256) is signed, service `s3`, the bucket's
 * region. The signing itself is the `aws4` library's (docs/dependencies.md says why that one).
 *
 * Contract: `signS3` returns the headers to send (the given ones plus `Host`, `X-Amz-Date`,
 * `X-Amz-Content-Sha256` and `Authorization`); it never reads credentials from the environment and
 * never logs. `payloadSha256` is the hex sha256 of the body (GET/HEAD: the empty string's).
 */
import * as aws4 from 'aws4';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export function signS3(
  method: string,
  url: URL,
  headers: Record<string, string>,
  region: string,
  creds: S3Credentials,
  payloadSha256 = EMPTY_SHA256,
  now = new Date(),
): Record<string, string> {
  const req: aws4.Request = {
    method,
    host: url.host,
    path: url.pathname + url.search,
    service: 's3',
    region,
    headers: { ...headers, 'X-Amz-Content-Sha256': payloadSha256, 'X-Amz-Date': amzDate(now) },
  };
  // Explicit credentials: aws4 would otherwise fall back to AWS_* environment variables.
  aws4.sign(req, { accessKeyId: creds.accessKeyId, secretAccessKey: creds.secretAccessKey });
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers ?? {})) if (v !== undefined) out[k] = String(v);
  return out;
}

/** `YYYYMMDDTHHMMSSZ`, the x-amz-date format. */
function amzDate(d: Date): string {
  return d.toISOString().replace(/[:-]|\.\d{3}/g, '');
}
