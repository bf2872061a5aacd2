// What the Dinie JS SDK (dinie-tech/sdk-js, npm dinie-sdk) sends when an app
// gives it `dispatcher: new EnvHttpProxyAgent()`, for
// reliability/https_clients_test.go. The SDK is not a dependency here: this
// script sends its requests the way it sends them, through the dispatcher's
// own request() (not fetch), with its headers:
//   - the token request as src/runtime/token-manager.ts,
//     TokenManager#performClientCredentials, sends it: POST {base}/auth/token,
//     a form body, Basic credentials;
//   - the API calls as src/runtime/http.ts, HttpClient#execute and
//     HttpClient.buildHeaders, send them: the Bearer token, its User-Agent and
//     X-Dinie-Sdk-* headers, and on a write a JSON body and an
//     X-Idempotency-Key made as src/runtime/idempotency.ts,
//     generateIdempotencyKey, makes it.
// It prints the status of the first answer that is not 2xx (or 200), then
// each answer's body on a line of its own.
//   node sdk.mjs BASE_URL    (e.g. https://api.dinie.com.br/api/v3)
import { randomUUID } from 'node:crypto';
import { EnvHttpProxyAgent } from 'undici';

// The SDK's version and Dinie's API version, as the SDK's User-Agent names them.
const sdkVersion = '1.1.0';
const userAgent = `Dinie-SDK-JS/${sdkVersion} (api-version=2026-03-01; node/${process.versions.node})`;

const base = new URL(process.argv[2]);
const origin = base.origin;
const basePath = base.pathname.replace(/\/+$/, '');
const dispatcher = new EnvHttpProxyAgent();
const lines = [];
let status = 200;

try {
  // The app's own credentials: any non-empty ones do, the proxy stands in.
  const basic = Buffer.from('unused:unused').toString('base64');
  const token = await step('token', {
    method: 'POST',
    path: `${basePath}/auth/token`,
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials',
  });
  const accessToken = token === undefined ? '' : JSON.parse(token).access_token;
  if (token !== undefined) {
    await step('get', { method: 'GET', path: `${basePath}/customers?limit=1`, headers: apiHeaders(accessToken) });
    await step('post', {
      method: 'POST',
      path: `${basePath}/customers`,
      headers: { ...apiHeaders(accessToken), 'content-type': 'application/json', 'x-idempotency-key': `dinie-sdk-retry-${randomUUID()}` },
      body: JSON.stringify({ name: 'Fake Customer' }),
    });
  }
} catch (err) {
  // A refused tunnel is an error, not a response, to undici: the status is
  // in the cause's message.
  const m = /Proxy response \((\d+)\)/.exec(String(err.cause ?? err));
  if (!m) throw err;
  console.log(m[1]);
  console.log(String(err));
  process.exit(0);
} finally {
  await dispatcher.close();
}
console.log(status);
console.log(lines.join('\n'));

function apiHeaders(accessToken) {
  return {
    authorization: `Bearer ${accessToken}`,
    accept: 'application/json',
    'user-agent': userAgent,
    'x-dinie-sdk-language': 'javascript',
    'x-dinie-sdk-version': sdkVersion,
    'x-dinie-sdk-runtime': `node/${process.versions.node}`,
  };
}

// step sends one request and keeps its body; undefined when it was not 2xx.
async function step(name, req) {
  const res = await dispatcher.request({ origin, ...req });
  const body = await res.body.text();
  lines.push(`${name} ${res.statusCode} ${body}`);
  if (res.statusCode < 200 || res.statusCode >= 300) {
    if (status === 200) status = res.statusCode;
    return undefined;
  }
  return body;
}
