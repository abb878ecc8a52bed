/**
 * The OSS header signature against the worked example of Aliyun's documentation ("Include a V1
 * signature in the Authorization header", https://www.alibabacloud.com/help/doc-detail/31951.htm):
 * AccessKeyId 44CF9590006BF252F707, AccessKeySecret OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV,
 * `PUT /nelson` on bucket oss-example, whose signature the page gives as 26NBxoKdsyly4EDv6inkoDft/yA=.
 * No OSS server is available here, so this and the request shape below are what is checked.
 */
import { ossAuthorization, ossStringToSign } from '../src/fetch/oss-signature';
import { ossDialect } from '../src/fetch/oss';
import { parseNydusdConfig } from '../src/daemon/config';

const EXAMPLE = {
  method: 'PUT',
  resource: '/oss-example/nelson',
  headers: {
    'Content-Md5': 'ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=',
    'Content-Type': 'text/html',
    Date: 'Thu, 17 Nov 2005 18:49:58 GMT',
    Host: 'oss-example.oss-cn-hangzhou.aliyuncs.com',
    'X-OSS-Meta-Author': 'foo@bar.com',
    'X-OSS-Magic': 'abracadabra',
  },
  accessKeyId: '44CF9590006BF252F707',
  accessKeySecret: 'OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV',
};

describe('OSS header signature (Aliyun worked example)', () => {
  test('string to sign: verb, Content-MD5, Content-Type, Date, sorted lower-case x-oss-* headers, resource', () => {
    expect(ossStringToSign(EXAMPLE)).toBe(
      'PUT\nODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=\ntext/html\nThu, 17 Nov 2005 18:49:58 GMT\nx-oss-magic:abracadabra\nx-oss-meta-author:foo@bar.com\n/oss-example/nelson',
    );
  });

  test('Authorization is the documented value', () => {
    expect(ossAuthorization(EXAMPLE)).toBe('OSS 44CF9590006BF252F707:26NBxoKdsyly4EDv6inkoDft/yA=');
  });

  test('a changed secret, header or resource gives another signature', () => {
    const good = ossAuthorization(EXAMPLE);
    expect(ossAuthorization({ ...EXAMPLE, accessKeySecret: `${EXAMPLE.accessKeySecret}x` })).not.toBe(good);
    expect(ossAuthorization({ ...EXAMPLE, resource: '/oss-example/nelson2' })).not.toBe(good);
    expect(ossAuthorization({ ...EXAMPLE, headers: { ...EXAMPLE.headers, 'X-OSS-Magic': 'other' } })).not.toBe(good);
  });

  test('a blob read is signed over /<bucket>/<object_prefix><blob id> at <bucket>.<endpoint>', () => {
    const { config } = parseNydusdConfig({
      device: { backend: { type: 'oss', config: { endpoint: 'oss-cn-hangzhou.aliyuncs.com', bucket_name: 'images', object_prefix: 'nydus/', access_key_id: 'AK', access_key_secret: 'SK' } } },
    });
    if (config.backend.type !== 'oss') throw new Error('not oss');
    const d = ossDialect(config.backend.config);
    const blob = 'a'.repeat(64);
    const url = d.url(`nydus/${blob}`);
    expect(url.href).toBe(`https://images.oss-cn-hangzhou.aliyuncs.com/nydus/${blob}`);
    const h = d.sign('GET', url, { range: 'bytes=0-9' });
    expect(h.Date).toMatch(/^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
    expect(h.Authorization).toBe(ossAuthorization({ method: 'GET', resource: `/images/nydus/${blob}`, headers: { Date: h.Date }, accessKeyId: 'AK', accessKeySecret: 'SK' }));
  });
});
