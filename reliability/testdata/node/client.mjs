// One request through the proxy the way a Node app makes it, for
// reliability/clients_test.go: prints the status, then the body.
//   node client.mjs proxyagent|envproxyagent|globalfetch|fetch URL
import { ProxyAgent, EnvHttpProxyAgent, fetch as undiciFetch, setGlobalDispatcher } from 'undici';

const [mode, url] = process.argv.slice(2);
let res;
try {
  res = await request(mode, url);
} catch (err) {
  // A refused tunnel is an error, not a response, to undici: the status is
  // in the cause's message.
  const m = /Proxy response \((\d+)\)/.exec(String(err.cause?.cause ?? err.cause ?? err));
  if (!m) throw err;
  console.log(m[1]);
  console.log(String(err.cause));
  process.exit(0);
}
console.log(res.status);
console.log(await res.text());

function request(mode, url) {
  switch (mode) {
    case 'proxyagent': // what apps pass as dispatcher: the proxy named in code
      return undiciFetch(url, { dispatcher: new ProxyAgent(url.startsWith('https:') ? process.env.HTTPS_PROXY : process.env.HTTP_PROXY) });
    case 'envproxyagent': // reads HTTP_PROXY, HTTPS_PROXY and NO_PROXY like curl does
      return undiciFetch(url, { dispatcher: new EnvHttpProxyAgent() });
    case 'globalfetch': // Node's own fetch, through the proxy the variables name
      setGlobalDispatcher(new EnvHttpProxyAgent());
      return fetch(url);
    case 'fetch': // Node's own fetch reads no proxy variable: base URL only
      return fetch(url);
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}
