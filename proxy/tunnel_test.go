package proxy_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dinie/dinie-auth-proxy/internal/testkit"
	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// upstreamAuthority is the fake Dinie's host:port, which the proxy forwards
// to in HTTP_PROXY mode.
func (e *env) upstreamAuthority() string { return strings.TrimPrefix(e.upstream.URL, "http://") }

// connectTo opens a plain tunnel through the proxy as undici's ProxyAgent
// does for an http:// URL, and returns the connection inside it.
func connectTo(t *testing.T, e *env, authority string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	return conn, br, resp
}

func roundTrip(t *testing.T, conn net.Conn, br *bufio.Reader, raw string) (*http.Response, string) {
	t.Helper()
	io.WriteString(conn, raw)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func TestPlainTunnelIsServedLikeAbsoluteForm(t *testing.T) {
	forEachSetup(t, testPlainTunnelIsServedLikeAbsoluteForm)
}

func testPlainTunnelIsServedLikeAbsoluteForm(t *testing.T, setup envOption) {
	core, logs := observer.New(zap.InfoLevel)
	e := newEnv(t, false, setup, func(_ *env, p *proxy.Config, _ *tokencache.Config) { p.Logger = zap.New(core) })
	up := e.upstreamAuthority()
	conn, br, resp := connectTo(t, e, up)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: status %d", up, resp.StatusCode)
	}
	// Several requests on the one tunnel: keep-alive inside it.
	for i, path := range []string{"/api/v3/customers?limit=1", "/api/v3/invoices"} {
		resp, body := roundTrip(t, conn, br, "GET "+path+" HTTP/1.1\r\nHost: "+up+"\r\nAuthorization: Bearer app-own\r\n\r\n")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d in the tunnel: %d %q", i, resp.StatusCode, body)
		}
		s := e.last(t)
		if want, _, _ := strings.Cut(path, "?"); s.Path != want || s.Auth != "Bearer fake-token-1" {
			t.Errorf("upstream saw %s with its token %v; want %s with the proxy's", s.Path, s.Auth == "Bearer fake-token-1", want)
		}
	}
	// The app's token request inside the tunnel is answered, not forwarded.
	calls := e.calls.Load()
	resp, body := roundTrip(t, conn, br, "POST /api/v3/auth/token HTTP/1.1\r\nHost: "+up+"\r\nContent-Length: 29\r\n\r\ngrant_type=client_credentials")
	if resp.StatusCode != 200 || !strings.Contains(body, proxy.StandInToken) || e.calls.Load() != calls {
		t.Errorf("token request in the tunnel: %d %q, forwarded %v", resp.StatusCode, body, e.calls.Load() != calls)
	}
	// Another host inside the tunnel: refused, nothing forwarded.
	resp, body = roundTrip(t, conn, br, "GET /api/v3/customers HTTP/1.1\r\nHost: evil.example\r\n\r\n")
	assertProblem(t, resp, body, 403, proxy.CodeHostNotAllowed)
	// No tunnel in a tunnel. (Behind net/http's server a refusal, written by
	// hand for its status line, closes the connection: a new tunnel.)
	conn, br, _ = connectTo(t, e, up)
	resp, body = roundTrip(t, conn, br, "CONNECT "+up+" HTTP/1.1\r\nHost: "+up+"\r\n\r\n")
	assertProblem(t, resp, body, 405, proxy.CodeConnectNotSupported)
	if n := e.calls.Load(); n != calls {
		t.Errorf("%d refused requests reached the upstream", n-calls)
	}
	if v := testkit.Value(t, e.reg, "dinie_proxy_tunnels_total", "result", "plain"); v != 2 {
		t.Errorf("plain tunnels = %v, want 2", v)
	}
	var connectLine, tunnelLine bool
	for _, l := range logs.FilterMessage("request").All() {
		m := l.ContextMap()
		connectLine = connectLine || m["method"] == "CONNECT" && m["host"] == up && m["status"] == int64(200)
		tunnelLine = tunnelLine || m["path"] == "/api/v3/invoices" && m["tunnel"] == true
	}
	if !connectLine || !tunnelLine {
		t.Errorf("access log: CONNECT line with its target %v, tunnelled request marked %v", connectLine, tunnelLine)
	}
}

func TestTunnelTakesBytesSentBeforeItsAnswer(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		e := newEnv(t, false, setup)
		up := e.upstreamAuthority()
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second)) // a lost request fails, not hangs
		// CONNECT and the first request in one write: the request must not
		// be lost with the CONNECT's buffer.
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nGET /api/v3/x HTTP/1.1\r\nHost: %s\r\n\r\n", up, up, up)
		br := bufio.NewReader(conn)
		if resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v %v", resp, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request sent with the CONNECT: %v %v", resp, err)
		}
		if s := e.last(t); s.Path != "/api/v3/x" {
			t.Errorf("upstream saw %s", s.Path)
		}
	})
}

func TestAppTokenRequestsAreAnsweredLocally(t *testing.T) {
	forEachSetup(t, testAppTokenRequestsAreAnsweredLocally)
}

func testAppTokenRequestsAreAnsweredLocally(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	proxyURL, _ := url.Parse(e.proxy.URL)
	viaProxy := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("app-id:fake-app-secret"))
	form := "grant_type=client_credentials"
	for _, tc := range []struct {
		name   string
		client *http.Client
		url    string
	}{
		{"base URL", http.DefaultClient, e.proxy.URL + "/auth/token"},
		{"base URL with the prefix", http.DefaultClient, e.proxy.URL + "/api/v3/auth/token"},
		{"HTTP_PROXY", viaProxy, e.upstream.URL + "/api/v3/auth/token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.client, "POST", tc.url, strings.NewReader(form),
				"Authorization", basic, "Content-Type", "application/x-www-form-urlencoded")
			var tok struct {
				AccessToken string `json:"access_token"`
				TokenType   string `json:"token_type"`
				ExpiresIn   int    `json:"expires_in"`
			}
			if err := json.Unmarshal([]byte(body), &tok); err != nil {
				t.Fatalf("%d, body is not JSON: %v", resp.StatusCode, err)
			}
			if resp.StatusCode != 200 || tok.AccessToken != proxy.StandInToken || tok.TokenType != "bearer" || tok.ExpiresIn != 3600 {
				t.Errorf("answer %d %+v", resp.StatusCode, tok)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
			if strings.Contains(body, "fake-token-") {
				t.Error("the proxy's own token was handed to the app")
			}
		})
	}
	if n := e.calls.Load(); n != 0 {
		t.Errorf("%d token requests reached the upstream", n)
	}
	// The stand-in, sent back, is replaced with the proxy's token; and no
	// token request made the proxy drop its own.
	do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil, "Authorization", "Bearer "+proxy.StandInToken)
	if s := e.last(t); s.Auth != "Bearer fake-token-1" {
		t.Error("the upstream did not get the proxy's token")
	}
	if n := e.fetches.Load(); n != 1 {
		t.Errorf("%d token fetches, want 1", n)
	}
	if v := testkit.Value(t, e.reg, "dinie_proxy_requests_total", "method", "post", "code", "200"); v != 3 {
		t.Errorf("requests_total{post,200} = %v, want 3", v)
	}
}

func TestRequestsForTheProxyItselfAreBaseURLRequests(t *testing.T) {
	forEachSetup(t, func(t *testing.T, setup envOption) {
		e := newEnv(t, false, setup)
		proxyURL, _ := url.Parse(e.proxy.URL)
		// An app with HTTP_PROXY set whose NO_PROXY lacks the proxy sends its
		// base-URL requests to the proxy in absolute form.
		viaProxy := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
		for _, host := range []string{proxyURL.Host, "localhost:" + proxyURL.Port()} {
			resp, body := do(t, viaProxy, "GET", "http://"+host+"/customers?limit=2", nil)
			if resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("%s: %d %q", host, resp.StatusCode, body)
			}
			if s := e.last(t); s.Path != "/api/v3/customers" || s.Query != "limit=2" || s.Auth != "Bearer fake-token-1" {
				t.Errorf("%s: upstream saw %s?%s", host, s.Path, s.Query)
			}
		}
		// Another port on loopback is another host.
		resp, body := do(t, viaProxy, "GET", "http://127.0.0.1:1/customers", nil)
		assertProblem(t, resp, body, 403, proxy.CodeHostNotAllowed)
	})
}
