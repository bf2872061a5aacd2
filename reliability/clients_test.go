//go:build reliability

package reliability

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// dinieHost stands for api.dinie.com.br: clients never proxy requests for
// loopback addresses or localhost (Go's never does), so the fake Dinie needs
// a name. .ci/run maps it to 127.0.0.1 in /etc/hosts.
const dinieHost = "api.dinie.test"

// needDinieHost skips a test whose fake Dinie needs its name to resolve
// (clients never proxy loopback), or fails it under CI, which sets the
// name up.
func needDinieHost(t *testing.T) {
	t.Helper()
	if _, err := net.LookupHost(dinieHost); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s does not resolve; .ci/run adds it to /etc/hosts", dinieHost)
		}
		t.Skipf("%s does not resolve: add '127.0.0.1 %s' to /etc/hosts (.ci/run does)", dinieHost, dinieHost)
	}
}

// realDinie is a fake Dinie API under dinieHost over TLS, as the proxy meets
// the real one: a token endpoint and an API that echoes the token it got.
type realDinie struct {
	srv    *httptest.Server
	caFile string
	mu     sync.Mutex
	seen   []string // method, path and Authorization of each API request
}

func newRealDinie(t *testing.T) *realDinie {
	t.Helper()
	d := &realDinie{}
	d.srv, d.caFile = serveAsDinie(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v3/auth/token" {
			if _, secret, _ := r.BasicAuth(); secret != secret1 {
				writeProblemJSON(w, 401, "invalid_client", "fake: bad secret")
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"%sclients","token_type":"bearer","expires_in":3600}`, tokenStem)
			return
		}
		d.mu.Lock()
		d.seen = append(d.seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		d.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+tokenStem+"clients" {
			writeProblemJSON(w, 401, "token_expired", "fake: no valid token")
			return
		}
		fmt.Fprintf(w, "dinie saw %s %s", r.Method, r.URL.Path)
		// An SDK's write carries its key: the echo shows it came through.
		if key := r.Header.Get("X-Idempotency-Key"); key != "" {
			fmt.Fprintf(w, " with X-Idempotency-Key %s", key)
		}
	}))
	return d
}

// serveAsDinie serves h over TLS with a certificate for dinieHost; caFile
// trusts it.
func serveAsDinie(t *testing.T, h http.Handler) (srv *httptest.Server, caFile string) {
	t.Helper()
	cert, caPEM := hostCertificate(t, dinieHost)
	srv = httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = quietLog()
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "dinie-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, caFile
}

// url is the fake's base URL under its name.
func (d *realDinie) url() string {
	_, port, _ := net.SplitHostPort(d.srv.Listener.Addr().String())
	return "https://" + dinieHost + ":" + port + "/api/v3"
}

// hostCertificate is a self-signed certificate for host, and its PEM.
func hostCertificate(t *testing.T, host string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// needTool finds a client; CI installs them all, so there a missing one
// fails the test instead of skipping it.
func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed; .ci/run installs it", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return path
}

// needClient finds what a client needs beyond its tool: Python's requests,
// Node's undici.
func needClient(t *testing.T, name, tool string) {
	t.Helper()
	needTool(t, tool)
	if name == "python requests" {
		if err := exec.Command("python3", "-c", "import requests").Run(); err != nil {
			needTool(t, "python3-requests") // fails in CI, skips elsewhere
		}
	}
	if strings.HasPrefix(name, "node") {
		if _, err := os.Stat("testdata/node/node_modules/undici"); err != nil {
			needTool(t, "undici (npm ci --prefix reliability/testdata/node)")
		}
	}
}

// TestRealClientsThroughHTTPProxy sends requests for Dinie's http:// URL
// through the proxy from the clients apps are built on, each set up only
// with the environment docs/modes-and-clients.md gives it (HTTP_PROXY and http_proxy,
// NO_PROXY and no_proxy, and Java's system properties): each reaches Dinie
// with the proxy's token, and a request for another host is refused.
func TestRealClientsThroughHTTPProxy(t *testing.T) {
	needDinieHost(t)
	d := newRealDinie(t)
	p := startProxy(t, map[string]string{
		"DINIE_PROXY_UPSTREAM_URL":       d.url(),
		"DINIE_PROXY_UPSTREAM_CA_FILE":   d.caFile,
		"DINIE_PROXY_AUTH_CLIENT_ID":     "fake-client",
		"DINIE_PROXY_AUTH_CLIENT_SECRET": secret1,
		"DINIE_PROXY_LOG_LEVEL":          "debug",
	})
	p.waitReady(t, 10*time.Second)

	dir := t.TempDir()
	goClient := filepath.Join(dir, "goclient")
	if out, err := exec.Command("go", "build", "-o", goClient, "./testdata/goclient").CombinedOutput(); err != nil {
		t.Fatalf("build the Go client: %v\n%s", err, out)
	}
	nodeScript, _ := filepath.Abs("testdata/node/client.mjs")
	javaClient, _ := filepath.Abs("testdata/java/Client.java")
	_, proxyPort, _ := net.SplitHostPort(p.proxyAddr)
	const pyUrllib = `import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1])
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())`
	const pyRequests = `import sys, requests
r = requests.get(sys.argv[1]); print(r.status_code); print(r.text)`

	// Each client prints the status on its first line, then the body; env
	// is what it needs beyond the proxy variables, as the table in
	// docs/modes-and-clients.md gives it.
	clients := []struct {
		name, tool string
		env        []string
		argv       func(url string) []string
	}{
		{"curl", "curl", nil, func(u string) []string {
			return []string{"curl", "-sS", "-w", "%{http_code}\n", "-o", "/dev/stderr", u}
		}},
		{"wget", "wget", nil, func(u string) []string { return []string{"wget", "-q", "-S", "-O", "-", "--content-on-error", u} }},
		{"python urllib", "python3", nil, func(u string) []string { return []string{"python3", "-c", pyUrllib, u} }},
		{"python requests", "python3", nil, func(u string) []string { return []string{"python3", "-c", pyRequests, u} }},
		{"go net/http", "go", nil, func(u string) []string { return []string{goClient, u} }},
		{"node undici ProxyAgent", "node", nil, func(u string) []string { return []string{"node", nodeScript, "proxyagent", u} }},
		{"node undici EnvHttpProxyAgent", "node", nil, func(u string) []string { return []string{"node", nodeScript, "envproxyagent", u} }},
		{"node fetch with EnvHttpProxyAgent as global dispatcher", "node", nil, func(u string) []string { return []string{"node", nodeScript, "globalfetch", u} }},
		// Java ignores HTTP_PROXY: its system properties name the proxy.
		{"java HttpURLConnection", "java", []string{"JAVA_TOOL_OPTIONS=-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=" + proxyPort},
			func(u string) []string { return []string{"java", javaClient, u} }},
	}
	base := append(os.Environ(),
		"HTTP_PROXY="+p.proxyURL, "http_proxy="+p.proxyURL,
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			needClient(t, c.name, c.tool)
			env := append(append([]string(nil), base...), c.env...)
			before := len(d.seenRequests())
			status, body := runClient(t, env, c.argv("http://"+dinieHost+"/api/v3/customers?limit=1"))
			if status != 200 || !strings.Contains(body, "dinie saw GET /api/v3/customers") {
				t.Errorf("Dinie's URL: status %d, body %q", status, body)
			}
			status, _ = runClient(t, env, c.argv("http://elsewhere.test/api/v3/customers"))
			if status != 403 {
				t.Errorf("another host: status %d, want 403", status)
			}
			if n := len(d.seenRequests()) - before; n != 1 {
				t.Errorf("Dinie saw %d requests, want 1", n)
			}
		})
	}
	t.Run("node fetch, base URL", func(t *testing.T) {
		needTool(t, "node")
		status, body := runClient(t, base, []string{"node", nodeScript, "fetch", p.proxyURL + "/customers"})
		if status != 200 || !strings.Contains(body, "dinie saw GET /api/v3/customers") {
			t.Errorf("status %d, body %q", status, body)
		}
	})
	for _, s := range d.seenRequests() {
		if !strings.HasSuffix(s, "Bearer "+tokenStem+"clients") {
			t.Errorf("a request reached Dinie without the proxy's token: %s", strings.Fields(s)[1])
		}
	}
}

func (d *realDinie) seenRequests() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.seen...)
}

// runClient runs a client and reads the status it reports: the first line
// of its output, or (wget) the status line it prints with -S; 0 when wget
// was refused a tunnel.
func runClient(t *testing.T, env, argv []string) (int, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not finish within 30 s", argv[0])
	}
	out := stdout.String()
	if argv[0] == "wget" {
		// -S writes the answer's headers to stderr: the status line is there.
		for line := range strings.Lines(stderr.String()) {
			if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[0], "HTTP/") {
				n, _ := strconv.Atoi(f[1])
				return n, out
			}
		}
		// A refused CONNECT is no answer to wget: it prints only the
		// reason phrase, so the caller looks for that.
		if strings.Contains(stderr.String(), "Proxy tunneling failed: ") {
			return 0, stderr.String()
		}
		t.Fatalf("wget printed no status line: %s", stderr.String())
	}
	if argv[0] == "curl" {
		out, stderrBody := out, stderr.String()
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n, stderrBody
	}
	first, rest, _ := strings.Cut(out, "\n")
	n, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatalf("%s: no status in its output %q (stderr %q)", argv[0], first, stderr.String())
	}
	return n, rest
}
