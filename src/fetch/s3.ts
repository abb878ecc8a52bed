/**
 * How nydusd's s3 backend addresses and signs an object: path-style URLs
 * (`<scheme>://<endpoint>/<bucket_name>/<object_prefix><blob id>`, endpoint `s3.amazonaws.com` when
 * empty) and SigV4 (sigv4.ts) with the bucket's `region`. Without `access_key_id` requests go
 * unsigned (anonymous, for public buckets).
 */
import type { BucketDialect, ObjectStoreConfig } from './object-store';
import { signS3 } from './sigv4';

export const S3_DEFAULT_ENDPOINT = 's3.amazonaws.com';

/** Each path segment percent-encoded; the slashes of `object_prefix` stay. */
export function encodeKey(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}

export function s3Dialect(cfg: ObjectStoreConfig): BucketDialect {
  const endpoint = cfg.endpoint || S3_DEFAULT_ENDPOINT;
  return {
    url: (key) => new URL(`${cfg.scheme}://${endpoint}/${encodeURIComponent(cfg.bucketName)}/${encodeKey(key)}`),
    sign: (method, url, headers, payloadSha256) => {
      if (!cfg.accessKeyId) return headers;
      return signS3(method, url, headers, cfg.region, { accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.accessKeySecret ?? '' }, payloadSha256);
    },
  };
}
