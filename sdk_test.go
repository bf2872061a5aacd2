package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/dinie/dinie-auth-proxy/proxy"
)

// sdkClient does on the wire what Dinie's SDKs do: it fetches its own token
// from POST {baseURL}/auth/token with Basic credentials, sends it as Bearer,
// re-fetches it once after a 401, and sends X-Idempotency-Key on writes.
type sdkClient struct {
	t       *testing.T
	baseURL string
	http    *http.Client
	token   string
	fetches int
}

func (c *sdkClient) fetchToken() {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.baseURL+"/auth/token", strings.NewReader("grant_type=client_credentials"))
	req.SetBasicAuth("fake-sdk-client", "fake-sdk-secret")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != 200 {
		c.t.Fatalf("token request: %d %v", resp.StatusCode, err)
	}
	// The SDK refreshes 300 s before expiry: a shorter token fails it.
	if tok.AccessToken == "" || !strings.EqualFold(tok.TokenType, "bearer") || tok.ExpiresIn <= 300 {
		c.t.Fatalf("token answer unusable by the SDK: type %q, expires_in %d", tok.TokenType, tok.ExpiresIn)
	}
	c.token = tok.AccessToken
	c.fetches++
}

func (c *sdkClient) call(method, path, body, idempotencyKey string) (int, string) {
	c.t.Helper()
	if c.token == "" {
		c.fetchToken()
	}
	for reauthed := false; ; reauthed = true {
		req, _ := http.NewRequest(method, c.baseURL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+c.token)
		req.Header.Set("X-Dinie-Sdk-Language", "javascript")
		if idempotencyKey != "" {
			req.Header.Set("X-Idempotency-Key", idempotencyKey)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			c.t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 401 && !reauthed {
			c.fetchToken()
			continue
		}
		return resp.StatusCode, string(b)
	}
}

// TestDinieSDKWorksUnchanged drives the proxy as an app built on a Dinie SDK
// does, pointed at it with dummy credentials, as its base URL and through
// HTTP_PROXY: the upstream sees only the proxy's token, and never a token
// request or a credential of the app's.
func TestDinieSDKWorksUnchanged(t *testing.T) {
	for _, server := range []string{"http1", "standard"} {
		t.Run("server="+server, func(t *testing.T) { testDinieSDKWorksUnchanged(t, server) })
	}
}

func testDinieSDKWorksUnchanged(t *testing.T, server string) {
	d := newFakeDinie(t)
	var mu sync.Mutex
	var seen []string // method, path, Authorization and idempotency key of each API call
	var unauthorized = map[string]int{"/api/v3/customers/cus_revoked": 2}
	d.setAPI(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %s %s key=%s", r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("X-Idempotency-Key")))
		n := unauthorized[r.URL.Path]
		unauthorized[r.URL.Path] = n - 1
		mu.Unlock()
		if n > 0 {
			w.WriteHeader(401) // revoked: the proxy's replay and then the app see it
			return
		}
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	})
	r := start(t, d.env("DINIE_PROXY_LISTEN_PROXY_SERVER", server))
	waitReady(t, r)
	proxyURL, _ := url.Parse(r.proxy)
	host := strings.TrimPrefix(d.URL, "https://")

	for i, mode := range []struct {
		name string
		sdk  *sdkClient
	}{
		{"base URL", &sdkClient{t: t, baseURL: r.proxy, http: &http.Client{}}},
		{"base URL with the prefix", &sdkClient{t: t, baseURL: r.proxy + "/api/v3", http: &http.Client{}}},
		{"HTTP_PROXY", &sdkClient{t: t, baseURL: "http://" + host + "/api/v3",
			http: &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			sdk := mode.sdk
			sdk.t = t
			if code, body := sdk.call("GET", "/customers?limit=10", "", ""); code != 200 || !strings.Contains(body, "/api/v3/customers") {
				t.Errorf("list: %d %s", code, body)
			}
			if sdk.token != proxy.StandInToken {
				t.Error("the app was handed something other than the stand-in token")
			}
			if code, _ := sdk.call("POST", "/customers", `{"name":"Ana"}`, "idem-fake-1"); code != 200 {
				t.Errorf("create: %d", code)
			}
			// The first mode's revocation meets the proxy's try and its
			// replay with a fresh token, then the app's own retry. The
			// later ones come within 10 s of that fetch, which was the one
			// a 401 may cause: the proxy's try goes to the app as it came.
			mu.Lock()
			unauthorized["/api/v3/customers/cus_revoked"] = map[bool]int{true: 2, false: 1}[i == 0]
			mu.Unlock()
			if code, _ := sdk.call("GET", "/customers/cus_revoked", "", ""); code != 200 {
				t.Errorf("read after a 401: %d", code)
			}
			if sdk.fetches != 2 {
				t.Errorf("the app fetched its token %d times, want 2 (first call, after the 401)", sdk.fetches)
			}
		})
	}

	mu.Lock()
	defer mu.Unlock()
	var posts int
	for _, s := range seen {
		_, rest, _ := strings.Cut(s, " ")
		path, auth, _ := strings.Cut(rest, " ")
		if strings.HasSuffix(path, "/auth/token") {
			t.Errorf("the upstream received an app token request: %s", path)
		}
		if !strings.HasPrefix(auth, "Bearer "+tokenStem) {
			t.Errorf("%s reached the upstream without the proxy's token", path)
		}
		if strings.HasPrefix(s, "POST /api/v3/customers ") {
			posts++
			if !strings.HasSuffix(s, "key=idem-fake-1") {
				t.Error("the app's X-Idempotency-Key did not reach the upstream")
			}
		}
	}
	if posts != 3 {
		t.Errorf("%d creates reached the upstream, want 3 (one per mode)", posts)
	}
	// The app's credentials may be real secrets: never in the proxy's logs,
	// debug level included.
	logs := r.stderr.String()
	if strings.Contains(logs, "fake-sdk-secret") || strings.Contains(logs, "ZmFrZS1zZGstY2xpZW50OmZha2Utc2RrLXNlY3JldA") {
		t.Error("the proxy logged the app's credentials")
	}
	// The proxy's own fetches: one at start-up, and one for the first
	// revocation; the others, within 10 s of it, cost none.
	if n := d.fetches.Load(); n != 2 {
		t.Errorf("the proxy fetched %d tokens, want 2", n)
	}
}

// TestDinieSDKSessionModeWorksUnchanged drives the whole program as the JS
// SDK's session mode does (dinie-tech/sdk-js, src/runtime/token-manager.ts,
// TokenManager with `code`: #performClientCredentials, then
// #performExchange, then requests with the customer token, as
// src/runtime/http.ts buildHeaders sends them): the customer token reaches
// Dinie as the app sent it. With auth.pass_bearer any, so does a customer
// token the proxy did not see issued.
func TestDinieSDKSessionModeWorksUnchanged(t *testing.T) {
	for _, passBearer := range []string{"session", "any"} {
		t.Run(passBearer, func(t *testing.T) {
			d := newFakeDinie(t)
			var mu sync.Mutex
			var auths []string
			d.setAPI(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				auths = append(auths, r.URL.Path+" "+r.Header.Get("Authorization"))
				mu.Unlock()
				if r.URL.Path == "/api/v3/biometrics/session-exchange" {
					io.WriteString(w, `{"access_token":"fake-customer-token","token_type":"bearer","expires_in":1800,"customer_id":"cus_fake"}`)
					return
				}
				io.WriteString(w, `{}`)
			})
			r := start(t, d.env("DINIE_PROXY_AUTH_PASS_BEARER", passBearer))
			waitReady(t, r)
			sdk := &sdkClient{t: t, baseURL: r.proxy + "/api/v3", http: &http.Client{}}
			sdk.fetchToken()
			code, body := sdk.call("POST", "/biometrics/session-exchange", `{"code":"dinie_bsc_fake"}`, "")
			if code != 200 || !strings.Contains(body, "fake-customer-token") {
				t.Fatalf("session exchange: %d %s", code, body)
			}
			sdk.token = "fake-customer-token"
			sdk.call("GET", "/customers/cus_fake", "", "")
			sdk.token = "fake-customer-token-from-elsewhere"
			sdk.call("GET", "/customers/cus_other", "", "")
			mu.Lock()
			defer mu.Unlock()
			want := []string{
				"/api/v3/biometrics/session-exchange Bearer " + tokenStem + "1",
				"/api/v3/customers/cus_fake Bearer fake-customer-token",
				"/api/v3/customers/cus_other Bearer " + map[string]string{"session": tokenStem + "1", "any": "fake-customer-token-from-elsewhere"}[passBearer],
			}
			if strings.Join(auths, "\n") != strings.Join(want, "\n") {
				t.Errorf("Dinie saw:\n%s\nwant:\n%s", strings.Join(auths, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}
