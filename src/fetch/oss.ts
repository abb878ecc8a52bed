/**
 * How nydusd's oss backend addresses and signs an object: virtual-host URLs
 * (`<scheme>://<bucket_name>.<endpoint>/<object_prefix><blob id>`), a `Date` header, and the OSS
 * header signature (oss-signature.ts) over the resource `/<bucket_name>/<object key>`. Without
 * `access_key_id` requests go unsigned (anonymous, for public-read buckets).
 */
import type { BucketDialect, ObjectStoreConfig } from './object-store';
import { ossAuthorization } from './oss-signature';
import { encodeKey } from './s3';

export function ossDialect(cfg: ObjectStoreConfig): BucketDialect {
  return {
    url: (key) => new URL(`${cfg.scheme}://${cfg.bucketName}.${cfg.endpoint}/${encodeKey(key)}`),
    sign: (method, url, headers) => {
      const out: Record<string, string> = { ...headers, Date: new Date().toUTCString() };
      if (!cfg.accessKeyId) return out;
      const resource = `/${cfg.bucketName}${decodeURIComponent(url.pathname)}`;
      out.Authorization = ossAuthorization({ method, resource, headers: out, accessKeyId: cfg.accessKeyId, accessKeySecret: cfg.accessKeySecret ?? '' });
      return out;
    },
  };
}
