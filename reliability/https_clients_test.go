//go:build reliability

package reliability

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/proxy"
)

// TestRealClientsThroughHTTPSProxy sends requests for Dinie's unchanged
// https:// URL through the proxy with interception on, from the clients
// apps are built on, each set up with the environment the table in docs/modes-and-clients.md
// gives it (HTTPS_PROXY and https_proxy, NO_PROXY and no_proxy, and the
// client's trust setting pointed at the proxy's CA files). Each reaches the
// fake Dinie over HTTPS with the proxy's token, and is refused a tunnel to
// another host. The clients never trust the fake itself: only the proxy
// does (upstream.ca_file), so a request that reaches it went through the
// interception.
func TestRealClientsThroughHTTPSProxy(t *testing.T) {
	needDinieHost(t)
	d := newRealDinie(t)
	caDir := t.TempDir()
	p := startProxy(t, map[string]string{
		"DINIE_PROXY_UPSTREAM_URL":       d.url(),
		"DINIE_PROXY_UPSTREAM_CA_FILE":   d.caFile,
		"DINIE_PROXY_AUTH_CLIENT_ID":     "fake-client",
		"DINIE_PROXY_AUTH_CLIENT_SECRET": secret1,
		"DINIE_PROXY_LOG_LEVEL":          "debug",
		"DINIE_PROXY_INTERCEPT_ENABLED":  "true",
		"DINIE_PROXY_INTERCEPT_CA_DIR":   caDir,
		"DINIE_PROXY_INTERCEPT_KEY_DIR":  t.TempDir(),
	})
	p.waitReady(t, 10*time.Second)
	bundle, caCert, store := filepath.Join(caDir, "bundle.pem"), filepath.Join(caDir, "ca.crt"), filepath.Join(caDir, "truststore.p12")

	dir := t.TempDir()
	goClient := filepath.Join(dir, "goclient")
	if out, err := exec.Command("go", "build", "-o", goClient, "./testdata/goclient").CombinedOutput(); err != nil {
		t.Fatalf("build the Go client: %v\n%s", err, out)
	}
	nodeScript, _ := filepath.Abs("testdata/node/client.mjs")
	javaClient, _ := filepath.Abs("testdata/java/Client.java")
	// A refused tunnel is an exception to Python; its message carries the
	// proxy's status.
	const pyUrllib = `import re, sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1])
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
except Exception as e:
    m = re.search(r'Tunnel connection failed: (\d+)', str(e))
    if not m: raise
    print(m.group(1)); print(e)`
	const pyRequests = `import re, sys, requests
try:
    r = requests.get(sys.argv[1]); print(r.status_code); print(r.text)
except requests.exceptions.ProxyError as e:
    m = re.search(r'Tunnel connection failed: (\d+)', str(e))
    if not m: raise
    print(m.group(1)); print(e)`
	_, proxyPort, _ := net.SplitHostPort(p.proxyAddr)
	wgetrc := filepath.Join(dir, "wgetrc")
	if err := os.WriteFile(wgetrc, []byte("ca_certificate = "+caCert+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Each client prints the status on its first line, then the body; env
	// is its trust setting, as the table in docs/modes-and-clients.md gives it.
	clients := []struct {
		name, tool string
		env        []string
		argv       func(url string) []string
	}{
		{"curl", "curl", []string{"CURL_CA_BUNDLE=" + bundle}, func(u string) []string {
			// The app's own Authorization, which the proxy must replace.
			return []string{"curl", "-sS", "-H", "Authorization: Bearer fake-app-token", "-w", "%{http_code} %{http_connect}\n", "-o", "/dev/stderr", u}
		}},
		{"python urllib", "python3", []string{"SSL_CERT_FILE=" + bundle}, func(u string) []string { return []string{"python3", "-c", pyUrllib, u} }},
		{"python requests", "python3", []string{"REQUESTS_CA_BUNDLE=" + bundle}, func(u string) []string { return []string{"python3", "-c", pyRequests, u} }},
		{"go net/http", "go", []string{"SSL_CERT_FILE=" + bundle}, func(u string) []string { return []string{goClient, u} }},
		{"node undici ProxyAgent", "node", []string{"NODE_EXTRA_CA_CERTS=" + caCert}, func(u string) []string { return []string{"node", nodeScript, "proxyagent", u} }},
		{"node undici EnvHttpProxyAgent", "node", []string{"NODE_EXTRA_CA_CERTS=" + caCert}, func(u string) []string { return []string{"node", nodeScript, "envproxyagent", u} }},
		{"node fetch with EnvHttpProxyAgent as global dispatcher", "node", []string{"NODE_EXTRA_CA_CERTS=" + caCert}, func(u string) []string { return []string{"node", nodeScript, "globalfetch", u} }},
		// wget reads no variable for its CA: the option, or the same
		// setting in a wgetrc file that WGETRC names. -nv, not -q: a refused
		// tunnel's reason phrase is all wget tells of it.
		{"wget --ca-certificate", "wget", nil, func(u string) []string {
			return []string{"wget", "-nv", "-S", "-O", "-", "--content-on-error", "--ca-certificate=" + caCert, u}
		}},
		{"wget with ca_certificate in WGETRC", "wget", []string{"WGETRC=" + wgetrc}, func(u string) []string {
			return []string{"wget", "-nv", "-S", "-O", "-", "--content-on-error", u}
		}},
		{"java HttpURLConnection", "java", []string{"JAVA_TOOL_OPTIONS=-Djavax.net.ssl.trustStore=" + store + " -Djavax.net.ssl.trustStoreType=PKCS12" +
			" -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=" + proxyPort}, func(u string) []string { return []string{"java", javaClient, u} }},
	}
	base := append(os.Environ(),
		"HTTPS_PROXY="+p.proxyURL, "https_proxy="+p.proxyURL,
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
	_, dinieURL, _ := strings.Cut(d.url(), "://")
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			needClient(t, c.name, c.tool)
			env := append(append([]string(nil), base...), c.env...)
			before := len(d.seenRequests())
			status, body := runHTTPSClient(t, env, c.argv("https://"+dinieURL+"/customers?limit=1"))
			if status != 200 || !strings.Contains(body, "dinie saw GET /api/v3/customers") {
				t.Errorf("Dinie's https URL: status %d, body %q", status, body)
			}
			status, body = runHTTPSClient(t, env, c.argv("https://elsewhere.test/api/v3/customers"))
			// Go and wget keep only the reason phrase of a refused CONNECT.
			phraseOnly := status == 0 && strings.Contains(body, "Only "+dinieHost+" goes through this proxy")
			if status != 403 && !phraseOnly {
				t.Errorf("another host: status %d (%q), want 403", status, body)
			}
			if n := len(d.seenRequests()) - before; n != 1 {
				t.Errorf("Dinie saw %d requests, want 1", n)
			}
		})
	}
	// A Dinie SDK given Dinie's https:// base URL and `dispatcher: new
	// EnvHttpProxyAgent()`: the proxy answers its token request with the
	// stand-in (never Dinie's token), and its read and its write reach Dinie
	// with the proxy's token, the write's X-Idempotency-Key intact.
	t.Run("node Dinie SDK with EnvHttpProxyAgent as dispatcher", func(t *testing.T) {
		needClient(t, "node sdk", "node")
		sdkScript, _ := filepath.Abs("testdata/node/sdk.mjs")
		env := append(append([]string(nil), base...), "NODE_EXTRA_CA_CERTS="+caCert)
		before := len(d.seenRequests())
		status, body := runClient(t, env, []string{"node", sdkScript, "https://" + dinieURL})
		if status != 200 {
			t.Errorf("Dinie's https URL: status %d, body %q", status, body)
		}
		for _, want := range []string{
			`token 200 {"access_token":"` + proxy.StandInToken + `"`,
			"get 200 dinie saw GET /api/v3/customers",
			"post 200 dinie saw POST /api/v3/customers with X-Idempotency-Key ",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("the SDK's requests: no %q in %q", want, body)
			}
		}
		status, body = runClient(t, env, []string{"node", sdkScript, "https://elsewhere.test/api/v3"})
		if status != 403 {
			t.Errorf("another host: status %d (%q), want 403", status, body)
		}
		if n := len(d.seenRequests()) - before; n != 2 {
			t.Errorf("Dinie saw %d requests, want 2", n)
		}
	})
	for _, s := range d.seenRequests() {
		if !strings.HasSuffix(s, "Bearer "+tokenStem+"clients") {
			t.Errorf("a request reached Dinie without the proxy's token: %s", strings.Fields(s)[1])
		}
	}
	m := p.scrape(t)
	for _, want := range []string{`dinie_proxy_tunnels_total{result="intercepted"}`, `dinie_proxy_tunnels_total{result="refused"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if strings.Contains(m, `result="handshake_failed"`) {
		t.Error("a client's handshake failed")
	}
}

// runHTTPSClient is runClient for curl's two codes: %{http_code} is 000
// when the CONNECT was refused, and %{http_connect} has the proxy's.
func runHTTPSClient(t *testing.T, env, argv []string) (int, string) {
	t.Helper()
	if argv[0] != "curl" {
		return runClient(t, env, argv)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	done := make(chan struct{})
	timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	cmd.Run()
	timer.Stop()
	close(done)
	codes := strings.Fields(stdout.String())
	if len(codes) != 2 {
		t.Fatalf("curl printed %q (stderr %q)", stdout.String(), stderr.String())
	}
	code, _ := strconv.Atoi(codes[0])
	if code == 0 {
		code, _ = strconv.Atoi(codes[1])
	}
	return code, stderr.String()
}
