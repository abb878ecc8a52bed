/**
 * Aliyun OSS's header signature (V1), as nydusd's oss backend sends it:
 *
 *   Authorization: OSS <AccessKeyId>:base64(hmac-sha1(AccessKeySecret,
 *       VERB \n Content-MD5 \n Content-Type \n Date \n CanonicalizedOSSHeaders CanonicalizedResource))
 *
 * CanonicalizedOSSHeaders are the `x-oss-*` headers, names lower-cased, sorted, `name:value` each
 * followed by `\n`; CanonicalizedResource is `/<bucket>/<object key>`. Checked against the worked
 * example of Aliyun's documentation (test/oss.signature.test.ts). Pure: no I/O, no logging.
 */
import * as crypto from 'node:crypto';

export interface OssSignInput {
  method: string;
  /** `/<bucket>/<object key>[?sub-resource]`. */
  resource: string;
  /** Request headers (any case); Content-MD5, Content-Type, Date and x-oss-* are read. */
  headers: Record<string, string>;
  accessKeyId: string;
  accessKeySecret: string;
}

function pick(headers: Record<string, string>, name: string): string {
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name) return v;
  return '';
}

/** The string the HMAC is computed over. */
export function ossStringToSign(i: Omit<OssSignInput, 'accessKeyId' | 'accessKeySecret'>): string {
  const oss = Object.entries(i.headers)
    .map(([k, v]) => [k.toLowerCase(), v.trim()] as const)
    .filter(([k]) => k.startsWith('x-oss-'))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}:${v}\n`)
    .join('');
  return `${i.method}\n${pick(i.headers, 'content-md5')}\n${pick(i.headers, 'content-type')}\n${pick(i.headers, 'date')}\n${oss}${i.resource}`;
}

/** The `Authorization` header value. */
export function ossAuthorization(i: OssSignInput): string {
  const sig = crypto.createHmac('sha1', i.accessKeySecret).update(ossStringToSign(i)).digest('base64');
  return `OSS ${i.accessKeyId}:${sig}`;
}
