package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/testkit"
)

// demoEcho is what the demo's mock echoes.
type demoEcho struct {
	Echo, Method, Host, Path, Query, Authorization string
	AccessToken                                    string `json:"access_token"`
	CustomerID                                     string `json:"customer_id"`
}

func parseEcho(t *testing.T, what, body string) demoEcho {
	t.Helper()
	var e demoEcho
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("%s: not the mock's JSON: %v\n%s", what, err, body)
	}
	return e
}

// wantInjected checks that the mock saw a list call with the proxy's
// token, whatever way in it came.
func wantInjected(t *testing.T, what string, e demoEcho) {
	t.Helper()
	if e.Echo == "" || e.Host != demoHost || e.Path != "/api/v3/customers" || e.Query != "limit=10" ||
		!strings.HasPrefix(e.Authorization, "Bearer "+demoTokenStem) || !strings.HasSuffix(e.Authorization, "…") {
		t.Errorf("%s: the mock saw %+v, want GET /api/v3/customers?limit=10 with a shortened demo token", what, e)
	}
}

// TestDemoEveryMode drives the demo as its banner tells a new user to, on
// every server and transport: base URL, HTTP_PROXY with curl, HTTPS_PROXY
// with Go and the CA, the session exchange, and then each command the
// banner printed, pasted into a shell.
func TestDemoEveryMode(t *testing.T) {
	for _, server := range []string{"http1", "standard"} {
		for _, transport := range []string{"http1", "standard"} {
			t.Run("server="+server+"/transport="+transport, func(t *testing.T) { testDemo(t, server, transport) })
		}
	}
}

func testDemo(t *testing.T, server, transport string) {
	r := start(t, map[string]string{}, "--demo", "--intercept.enabled", "--listen.proxy", "127.0.0.1:0", "--listen.admin", "127.0.0.1:0",
		"--listen.proxy_server", server, "--upstream.transport", transport)
	waitReady(t, r)
	banner := r.stdout.String()
	list := "/api/v3/customers?limit=10"

	t.Run("base URL", func(t *testing.T) {
		code, body := httpGet(t, r.proxy+"/customers?limit=10")
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		wantInjected(t, "base URL", parseEcho(t, "base URL", body))
	})
	t.Run("HTTP_PROXY with curl", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("no curl")
		}
		for name, cmd := range map[string]*exec.Cmd{
			"-x":         exec.Command("curl", "-sS", "-x", r.proxy, "http://"+demoHost+list),
			"http_proxy": exec.Command("curl", "-sS", "http://"+demoHost+list),
		} {
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			if name == "http_proxy" {
				cmd.Env = append(cmd.Env, "http_proxy="+r.proxy)
			}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("curl %s: %v", name, err)
			}
			wantInjected(t, "curl "+name, parseEcho(t, "curl "+name, string(out)))
		}
	})
	t.Run("HTTPS_PROXY with Go and the CA", func(t *testing.T) {
		m := regexp.MustCompile(`--cacert '([^']+)'`).FindStringSubmatch(banner)
		if m == nil {
			t.Fatalf("the banner names no CA file:\n%s", banner)
		}
		pem, err := os.ReadFile(m[1])
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		proxyURL, _ := url.Parse(r.proxy)
		tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: roots}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get("https://" + demoHost + list)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.TLS == nil {
			t.Fatalf("status %d over TLS %v", resp.StatusCode, resp.TLS != nil)
		}
		wantInjected(t, "HTTPS_PROXY", parseEcho(t, "HTTPS_PROXY", string(body)))
	})
	t.Run("session exchange", func(t *testing.T) {
		resp, err := http.Post(r.proxy+"/biometrics/session-exchange", "application/json", strings.NewReader(`{"code":"dinie_bsc_demo"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		e := parseEcho(t, "session exchange", string(body))
		if resp.StatusCode != 200 || !strings.HasPrefix(e.AccessToken, demoSessionStem) || e.CustomerID == "" {
			t.Fatalf("session exchange: %d, customer %q", resp.StatusCode, e.CustomerID)
		}
		// The SDK's session mode then sends the customer token, which
		// reaches the mock as sent: the proxy remembered it was issued.
		req, _ := http.NewRequest("GET", r.proxy+"/customers/"+e.CustomerID, nil)
		req.Header.Set("Authorization", "Bearer "+e.AccessToken)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		if e := parseEcho(t, "with the session token", string(body)); !strings.HasPrefix(e.Authorization, "Bearer "+demoSessionStem) {
			t.Errorf("the mock saw %.20s…, want the session token", e.Authorization)
		}
	})
	t.Run("the banner's commands", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("no curl")
		}
		var commands []string
		for line := range strings.Lines(banner) {
			if cmd, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "  "); ok && !strings.HasPrefix(cmd, "#") {
				commands = append(commands, cmd)
			}
		}
		if len(commands) != 4 {
			t.Fatalf("%d commands in the banner, want 4 (base URL, HTTP_PROXY, HTTPS_PROXY, session):\n%s", len(commands), banner)
		}
		for _, c := range commands {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			cmd := exec.CommandContext(ctx, "sh", "-c", c)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			out, err := cmd.Output()
			cancel()
			if err != nil {
				t.Errorf("%s: %v", c, err)
				continue
			}
			if e := parseEcho(t, c, string(out)); e.Echo == "" && e.CustomerID == "" {
				t.Errorf("%s: not the mock's answer: %s", c, out)
			}
		}
	})
}

// Without --intercept.enabled the banner says how to try HTTPS_PROXY, and
// a CONNECT to the demo's TLS port is refused as it would be for Dinie's.
func TestDemoWithoutInterception(t *testing.T) {
	r := start(t, map[string]string{}, "--demo", "--listen.proxy", "127.0.0.1:0", "--listen.admin", "127.0.0.1:0")
	waitReady(t, r)
	if !strings.Contains(r.stdout.String(), "start the demo with --intercept.enabled") || strings.Contains(r.stdout.String(), "https_proxy=") {
		t.Errorf("banner:\n%s", r.stdout.String())
	}
	if resp, _ := rawCONNECT(t, r, demoHost+":443"); resp.StatusCode != 405 {
		t.Errorf("CONNECT %s:443 without interception: %d, want 405", demoHost, resp.StatusCode)
	}
}

// The CA directory the demo made for itself is gone once it stops.
func TestDemoRemovesItsCADir(t *testing.T) {
	r := start(t, map[string]string{}, "--demo", "--intercept.enabled", "--listen.proxy", "127.0.0.1:0", "--listen.admin", "127.0.0.1:0")
	// start returns at the listening log line; the banner follows it.
	var m []string
	testkit.Eventually(t, "the banner's CA file", func() bool {
		m = regexp.MustCompile(`--cacert '([^']+)/ca.crt'`).FindStringSubmatch(r.stdout.String())
		return m != nil
	})
	if _, err := os.Stat(m[1]); err != nil {
		t.Fatal(err)
	}
	r.stop()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	r.done <- nil // for the cleanup
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("%s is still there: %v", m[1], err)
	}
}

// The demo's dial override leads to the mock for its host, and to nothing
// else: the demo never reaches out.
func TestDemoDialsOnlyItsMock(t *testing.T) {
	d := &demo{}
	if _, err := d.dialContext(t.Context(), "tcp", "api.dinie.com.br:443"); err == nil || !strings.Contains(err.Error(), "not the demo's mock") {
		t.Errorf("dial api.dinie.com.br: %v, want a refusal", err)
	}
}
