package proxy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/testkit"
	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// jsSessionClient sends what the JS SDK's session mode sends
// (dinie-tech/sdk-js, src/runtime/token-manager.ts, TokenManager with
// `code`): #performClientCredentials, POST {base}/auth/token with Basic
// credentials and the form grant_type=client_credentials; then
// #performExchange, POST {base}/biometrics/session-exchange with
// "authorization: Bearer <that token>" and the JSON {"code": ...}; then
// every request with "Bearer <customer token>" (src/runtime/http.ts,
// buildHeaders).
type jsSessionClient struct {
	t      *testing.T
	base   string
	client *http.Client
}

func (c jsSessionClient) post(path, contentType, body string, header ...string) (*http.Response, string) {
	c.t.Helper()
	return do(c.t, c.client, "POST", c.base+path, strings.NewReader(body), append([]string{"Content-Type", contentType}, header...)...)
}

// accessToken is TokenManager.getAccessToken in session mode.
func (c jsSessionClient) accessToken(code string) string {
	c.t.Helper()
	resp, body := c.post("/auth/token", "application/x-www-form-urlencoded", "grant_type=client_credentials",
		"Authorization", "Basic dW51c2VkOnVudXNlZA==") // base64("unused:unused")
	var cc struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &cc) != nil {
		c.t.Fatalf("token request: %d %s", resp.StatusCode, body)
	}
	resp, body = c.post("/biometrics/session-exchange", "application/json", fmt.Sprintf(`{"code":%q}`, code),
		"Authorization", "Bearer "+cc.AccessToken)
	var session struct {
		AccessToken string `json:"access_token"`
		CustomerID  string `json:"customer_id"`
	}
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &session) != nil || session.AccessToken == "" {
		c.t.Fatalf("session exchange: %d %s", resp.StatusCode, body)
	}
	return session.AccessToken
}

func (c jsSessionClient) get(path, token string) (*http.Response, string) {
	c.t.Helper()
	return do(c.t, c.client, "GET", c.base+path, nil, "Authorization", "Bearer "+token,
		"User-Agent", "Dinie-SDK-JS/1.1.0 (api-version=2026-03-01; node/20.19.2)",
		"X-Dinie-Sdk-Language", "javascript", "Accept", "application/json")
}

// sessionAPI is a fake Dinie whose session exchange issues
// fake-customer-token-N, for expiresIn seconds; /whoami/401 answers 401
// to a customer token; anything else echoes.
func sessionAPI(e *env, expiresIn int) {
	var n atomic.Int64
	e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) {
		switch {
		case r.URL.Path == "/api/v3/biometrics/session-exchange":
			// The answer must come uncompressed, for the proxy to read the
			// token in it, whatever the app accepts.
			if !strings.HasPrefix(s.Auth, "Bearer fake-token-") || s.Body != `{"code":"dinie_bsc_fake"}` ||
				r.Header.Get("Accept-Encoding") != "identity" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"fake-customer-token-%d","token_type":"bearer","expires_in":%d,"customer_id":"cus_fake"}`, n.Add(1), expiresIn)
		case r.URL.Path == "/api/v3/whoami/401" && strings.HasPrefix(s.Auth, "Bearer fake-customer-token-"):
			w.WriteHeader(http.StatusUnauthorized)
		default:
			w.Write([]byte("ok"))
		}
	})
}

// Issue 21, point 1: the customer-scoped token of an SDK's session mode
// reaches Dinie as the app sent it, in base-URL and HTTP_PROXY mode; the
// exchange itself, sent with the stand-in, gets the partner token.
func TestSessionTokensPassThrough(t *testing.T) { forEachSetup(t, testSessionTokensPassThrough) }

func testSessionTokensPassThrough(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	sessionAPI(e, 1800)
	up, _ := url.Parse(e.upstream.URL)
	proxyURL, _ := url.Parse(e.proxy.URL)
	for _, mode := range []jsSessionClient{
		{t: t, base: e.proxy.URL, client: http.DefaultClient},
		{t: t, base: "http://" + up.Host + "/api/v3", client: &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}},
	} {
		mode.t = t
		token := mode.accessToken("dinie_bsc_fake")
		if exchange := e.last(t); exchange.Auth != "Bearer fake-token-1" {
			t.Errorf("the exchange reached Dinie without the partner token")
		}
		resp, _ := mode.get("/customers/cus_fake/kyc", token)
		if s := e.last(t); resp.StatusCode != 200 || s.Auth != "Bearer "+token {
			t.Errorf("%s: the session request reached Dinie with another token than the app's (status %d)", mode.base, resp.StatusCode)
		}
		// A 401 to it is the app's: no replay with the partner token, no
		// token fetch.
		before, fetches := e.calls.Load(), e.fetches.Load()
		resp, _ = mode.get("/whoami/401", token)
		if resp.StatusCode != 401 || e.calls.Load()-before != 1 || e.fetches.Load() != fetches {
			t.Errorf("session token's 401: app got %d after %d sends and %d fetches; want the 401 after 1, none",
				resp.StatusCode, e.calls.Load()-before, e.fetches.Load()-fetches)
		}
	}
	if v := testkit.Value(t, e.reg, "dinie_proxy_session_tokens"); v != 2 {
		t.Errorf("dinie_proxy_session_tokens = %v, want 2", v)
	}
	// A Bearer token that Dinie did not issue through the proxy, and the
	// stand-in, are replaced.
	for _, token := range []string{"fake-customer-token-99", proxy.StandInToken} {
		do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil, "Authorization", "Bearer "+token)
		if s := e.last(t); s.Auth != "Bearer fake-token-1" {
			t.Errorf("Bearer %s was passed on, want it replaced", token)
		}
	}
}

// A session token is passed on until a day after it expires, then
// replaced like any other; the proxy's clock decides.
func TestSessionTokensExpire(t *testing.T) {
	clock := newFakeClock()
	e := newEnv(t, false, withClock(clock))
	sessionAPI(e, 600)
	c := jsSessionClient{t: t, base: e.proxy.URL, client: http.DefaultClient}
	token := c.accessToken("dinie_bsc_fake")
	clock.advance(599 * time.Second)
	c.get("/customers", token)
	if s := e.last(t); s.Auth != "Bearer "+token {
		t.Error("a session token was replaced before it expired")
	}
	// Expired, it still reaches Dinie as sent, for Dinie's own 401: with
	// the partner token instead, the request would succeed with a scope
	// the app did not ask for.
	clock.advance(time.Second)
	c.get("/customers", token)
	if s := e.last(t); s.Auth != "Bearer "+token {
		t.Error("an expired session token was replaced by the partner token")
	}
	// A day later it is forgotten, and replaced like any unknown Bearer.
	clock.advance(24 * time.Hour)
	c.get("/customers", token)
	if s := e.last(t); s.Auth != "Bearer fake-token-1" {
		t.Error("a session token was remembered more than a day after it expired")
	}
	if v := testkit.Value(t, e.reg, "dinie_proxy_session_tokens"); v != 0 {
		t.Errorf("dinie_proxy_session_tokens = %v, want 0", v)
	}
}

// An exchange that fails, or answers without a usable token, teaches the
// proxy nothing.
func TestFailedSessionExchangeIsNotRemembered(t *testing.T) {
	for _, answer := range []string{
		`{"access_token":"fake-customer-token-1","token_type":"bearer","expires_in":0}`,
		`{"access_token":"","token_type":"bearer","expires_in":600}`,
		`not json fake-customer-token-1`,
		// Over the 64 KiB read to find the token: passed on unread.
		`{"access_token":"fake-customer-token-1","token_type":"bearer","expires_in":600,"pad":"` + strings.Repeat("x", 64<<10) + `"}`,
	} {
		e := newEnv(t, false)
		e.setAPI(func(w http.ResponseWriter, r *http.Request, s seen) { w.Write([]byte(answer)) })
		resp, body := do(t, http.DefaultClient, "POST", e.proxy.URL+"/biometrics/session-exchange", strings.NewReader(`{"code":"dinie_bsc_fake"}`))
		if resp.StatusCode != 200 || body != answer {
			t.Errorf("the exchange's answer did not reach the app unchanged: %d, %d bytes", resp.StatusCode, len(body))
		}
		do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil, "Authorization", "Bearer fake-customer-token-1")
		if s := e.last(t); s.Auth != "Bearer fake-token-1" || testkit.Value(t, e.reg, "dinie_proxy_session_tokens") != 0 {
			t.Errorf("after the answer %.60s, a token was remembered", answer)
		}
	}
}

// auth.pass_bearer any passes on any Bearer token, the stand-in aside.
func TestPassAnyBearer(t *testing.T) { forEachSetup(t, testPassAnyBearer) }

func testPassAnyBearer(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup, func(_ *env, p *proxy.Config, _ *tokencache.Config) { p.PassAnyBearer = true })
	for _, tt := range []struct{ sent, want string }{
		{"Bearer fake-customer-token-from-elsewhere", "Bearer fake-customer-token-from-elsewhere"},
		{"bearer fake-lower-case-scheme", "bearer fake-lower-case-scheme"},
		{"Bearer " + proxy.StandInToken, "Bearer fake-token-1"},
		{"Basic ZmFrZTpmYWtl", "Bearer fake-token-1"},
		{"Bearer ", "Bearer fake-token-1"},
	} {
		do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil, "Authorization", tt.sent)
		if s := e.last(t); s.Auth != tt.want {
			t.Errorf("Authorization %q reached Dinie as %q, want %q", tt.sent, s.Auth, tt.want)
		}
	}
}
