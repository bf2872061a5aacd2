package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/testkit"
	"github.com/dinie/dinie-auth-proxy/proxy"
)

// Issue 21, point 2: only client credentials get the stand-in: as a form
// (the JS SDK's TokenManager, src/runtime/token-manager.ts,
// #performClientCredentials), as JSON (the Python SDK's
// dinie/runtime/token_manager.py, TokenManager._fetch_token), or with no
// grant_type. Any other grant is refused: a stand-in for it would give
// the app the partner's scope.
func TestOnlyClientCredentialsGetTheStandIn(t *testing.T) {
	forEachSetup(t, testOnlyClientCredentialsGetTheStandIn)
}

func testOnlyClientCredentialsGetTheStandIn(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	up, _ := url.Parse(e.upstream.URL)
	proxyURL, _ := url.Parse(e.proxy.URL)
	viaProxy := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	const form, json = "application/x-www-form-urlencoded", "application/json" // content types
	for _, tt := range []struct {
		name, contentType, body string
		status                  int
		code                    string
		query                   string   // appended to the token URL
		header                  []string // more headers, name and value
	}{
		{"JS SDK form", form, "grant_type=client_credentials", 200, "", "", nil},
		{"Python SDK JSON", json, `{"grant_type": "client_credentials", "client_id": "fake-id", "client_secret": "fake-secret"}`, 200, "", "", nil},
		{"no grant_type", form, "", 200, "", "", nil},
		{"JSON without grant_type", json, `{"client_id":"fake-id"}`, 200, "", "", nil},
		{"authorization code form", form, "grant_type=authorization_code&code=fake-code", 400, proxy.CodeUnsupportedGrantType, "", nil},
		{"token exchange JSON", "application/json; charset=utf-8", `{"grant_type":"urn:ietf:params:oauth:grant-type:token-exchange","subject_token":"fake"}`, 400, proxy.CodeUnsupportedGrantType, "", nil},
		{"refresh token form", form, "grant_type=refresh_token&refresh_token=fake", 400, proxy.CodeUnsupportedGrantType, "", nil},
		{"two grant types", form, "grant_type=client_credentials&grant_type=password", 400, proxy.CodeBadRequestBody, "", nil},
		{"grant_type not a string", json, `{"grant_type":1}`, 400, proxy.CodeBadRequestBody, "", nil},
		{"JSON that is not an object", json, `[`, 400, proxy.CodeBadRequestBody, "", nil},
		{"over 64 KiB", form, "grant_type=client_credentials&pad=" + strings.Repeat("x", 64<<10), 400, proxy.CodeBadRequestBody, "", nil},
		// Another grant where a form parser does not look: JSON sent as a
		// form or as text, the query, a compressed body.
		{"JSON sent as a form", form, `{"grant_type":"authorization_code","code":"fake-code"}`, 400, proxy.CodeUnsupportedGrantType, "", nil},
		{"JSON sent as text", "text/plain", ` {"grant_type":"password"}`, 400, proxy.CodeUnsupportedGrantType, "", nil},
		{"JSON with no content type", "", `{"grant_type":"password"}`, 400, proxy.CodeUnsupportedGrantType, "", nil},
		{"grant in the query", form, "", 400, proxy.CodeUnsupportedGrantType, "?grant_type=authorization_code", nil},
		{"query and body disagree", form, "grant_type=client_credentials", 400, proxy.CodeBadRequestBody, "?grant_type=password", nil},
		{"client credentials in the query", form, "", 200, "", "?grant_type=client_credentials", nil},
		{"compressed body", form, "\x1f\x8b", 400, proxy.CodeBadRequestBody, "", []string{"Content-Encoding", "gzip"}},
	} {
		for _, target := range []struct {
			name   string
			client *http.Client
			url    string
		}{
			{"base URL", http.DefaultClient, e.proxy.URL + "/auth/token"},
			{"HTTP_PROXY", viaProxy, "http://" + up.Host + "/api/v3/auth/token"},
		} {
			t.Run(tt.name+"/"+target.name, func(t *testing.T) {
				before := e.calls.Load()
				resp, body := do(t, target.client, "POST", target.url+tt.query, strings.NewReader(tt.body),
					append([]string{"Content-Type", tt.contentType, "Authorization", "Basic ZmFrZS1pZDpmYWtlLXNlY3JldA=="}, tt.header...)...)
				if e.calls.Load() != before {
					t.Error("a token request was forwarded")
				}
				if tt.status != 200 {
					assertProblem(t, resp, body, tt.status, tt.code)
					if strings.Contains(body, proxy.StandInToken) {
						t.Error("a refused token request got the stand-in")
					}
					return
				}
				if resp.StatusCode != 200 || !strings.Contains(body, `"access_token":"`+proxy.StandInToken+`"`) {
					t.Errorf("got %d %s, want the stand-in", resp.StatusCode, body)
				}
			})
		}
	}
}

// pythonSDKHeaders are what the Python SDK sends on a POST's first try
// (dinie/runtime/http.py, BaseClient._build_headers and _USER_AGENT): its
// User-Agent, an Idempotency-Key, and no X-Dinie-Sdk-Language; from the
// second try on it adds X-Dinie-Retry-Count.
func pythonSDKHeaders(key string) []string {
	return []string{
		"Authorization", "Bearer " + proxy.StandInToken,
		"Content-Type", "application/json",
		"Accept", "application/json",
		"Idempotency-Key", key,
		"User-Agent", "Dinie-SDK-Python/0.5.0 (api-version=2026-03-01; python/3.11.2)",
	}
}

// Issue 21, points 3 and 4: the Python SDK is recognised by its
// User-Agent, so its first try is never retried under it, and its
// Idempotency-Key reaches Dinie as X-Idempotency-Key.
func TestPythonSDKIsNotRetriedAndItsKeyReachesDinie(t *testing.T) {
	forEachSetup(t, testPythonSDKIsNotRetriedAndItsKeyReachesDinie)
}

func testPythonSDKIsNotRetriedAndItsKeyReachesDinie(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup, withClock(newFakeClock()))
	e.script(status(503))
	resp, _ := do(t, http.DefaultClient, "POST", e.proxy.URL+"/loans", strings.NewReader(`{"amount":1}`), pythonSDKHeaders("fake-key-py-1")...)
	if resp.StatusCode != 503 || e.calls.Load() != 1 {
		t.Errorf("app got %d after %d sends, want the 503 after 1: the SDK retries on its own", resp.StatusCode, e.calls.Load())
	}
	if s := e.last(t); s.Header.Get("X-Idempotency-Key") != "fake-key-py-1" || s.Header.Get("Idempotency-Key") != "fake-key-py-1" {
		t.Errorf("Dinie got X-Idempotency-Key %q, Idempotency-Key %q; want the app's key in both",
			s.Header.Get("X-Idempotency-Key"), s.Header.Get("Idempotency-Key"))
	}
	e.script(okAnswer)
	resp, _ = do(t, http.DefaultClient, "POST", e.proxy.URL+"/loans", strings.NewReader(`{"amount":1}`), pythonSDKHeaders("fake-key-py-2")...)
	if s := e.last(t); resp.StatusCode != 200 || s.Header.Get("X-Idempotency-Key") != "fake-key-py-2" {
		t.Errorf("app got %d; Dinie got X-Idempotency-Key %q", resp.StatusCode, s.Header.Get("X-Idempotency-Key"))
	}
}

// Issue 21, point 4: an app's bare Idempotency-Key is copied into the
// header Dinie documents before anything is sent, so that every try Dinie
// sees carries it; an X-Idempotency-Key of the app's own is left alone.
func TestIdempotencyKeyIsCopiedIntoXIdempotencyKey(t *testing.T) {
	forEachSetup(t, testIdempotencyKeyIsCopiedIntoXIdempotencyKey)
}

func testIdempotencyKeyIsCopiedIntoXIdempotencyKey(t *testing.T, setup envOption) {
	for _, tt := range []struct {
		name   string
		header []string
		want   string
	}{
		{"bare", []string{"Idempotency-Key", "fake-key-1"}, "fake-key-1"},
		{"both", []string{"Idempotency-Key", "fake-key-2", "X-Idempotency-Key", "fake-x-key-2"}, "fake-x-key-2"},
		{"empty X", []string{"Idempotency-Key", "fake-key-3", "X-Idempotency-Key", ""}, "fake-key-3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, false, setup, withClock(newFakeClock()))
			e.script(status(503), okAnswer)
			resp, _ := do(t, http.DefaultClient, "POST", e.proxy.URL+"/payments", strings.NewReader("fake-body"), tt.header...)
			all := e.seenAll()
			if resp.StatusCode != 200 || len(all) != 2 {
				t.Fatalf("app got %d after %d sends, want 200 after 2", resp.StatusCode, len(all))
			}
			for i, s := range all {
				if got := s.Header.Get("X-Idempotency-Key"); got != tt.want || s.Body != "fake-body" {
					t.Errorf("try %d: X-Idempotency-Key %q, body %q; want %q and the body", i+1, got, s.Body, tt.want)
				}
			}
		})
	}
}

// An empty idempotency key is no key: dropped before the request goes
// upstream, it does not make a POST resend-safe, for the proxy's retries
// or for net/http's transport, which counts the header's mere presence.
func TestEmptyIdempotencyKeyIsDropped(t *testing.T) {
	forEachSetup(t, testEmptyIdempotencyKeyIsDropped)
}

func testEmptyIdempotencyKeyIsDropped(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup, withClock(newFakeClock()))
	e.script(status(503), okAnswer)
	resp, _ := do(t, http.DefaultClient, "POST", e.proxy.URL+"/payments", strings.NewReader("fake-body"),
		"Idempotency-Key", "", "X-Idempotency-Key", "")
	all := e.seenAll()
	if resp.StatusCode != 503 || len(all) != 1 {
		t.Fatalf("app got %d after %d sends, want the 503 after 1", resp.StatusCode, len(all))
	}
	for _, name := range []string{"Idempotency-Key", "X-Idempotency-Key"} {
		if _, ok := all[0].Header[name]; ok {
			t.Errorf("the empty %s reached the upstream", name)
		}
	}
}

// Issue 21, point 5: against an upstream that always fails, retries are
// at most a fifth of the requests of the last 10 s (at least 3); then
// the budget is spent, counted, and renewed as time passes.
func TestRetryBudgetBoundsTheLoadOnAFailingUpstream(t *testing.T) {
	forEachSetup(t, testRetryBudgetBoundsTheLoadOnAFailingUpstream)
}

func testRetryBudgetBoundsTheLoadOnAFailingUpstream(t *testing.T, setup envOption) {
	clock := newFakeClock()
	e := newEnv(t, false, setup, withClock(clock))
	e.script(status(503))
	const n = 40
	for range n {
		if resp, _ := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil); resp.StatusCode != 503 {
			t.Fatalf("app got %d, want the upstream's 503", resp.StatusCode)
		}
	}
	// The waits (a few hundred ms each) kept all of it within 10 s.
	got := e.calls.Load()
	t.Logf("%d app requests, %d sent upstream", n, got)
	if limit := int64(n + n/5); got > limit || got < n+3 {
		t.Errorf("upstream got %d requests for %d, want from %d to %d", got, n, n+3, limit)
	}
	if v := testkit.Value(t, e.reg, "dinie_proxy_retry_budget_exhausted_total"); v < n/2 {
		t.Errorf("retry_budget_exhausted_total = %v, want most of the %d requests", v, n)
	}
	// Ten seconds on, the budget is there again.
	clock.advance(10 * time.Second)
	before := e.calls.Load()
	do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil)
	if sent := e.calls.Load() - before; sent != 3 {
		t.Errorf("10 s later, a request was sent %d times, want 3 (two retries)", sent)
	}
}

// Issue 21, point 5: a Retry-After of 0 waits the backoff, never nothing.
func TestRetryAfterZeroWaitsTheBackoff(t *testing.T) {
	forEachSetup(t, testRetryAfterZeroWaitsTheBackoff)
}

func testRetryAfterZeroWaitsTheBackoff(t *testing.T, setup envOption) {
	past := time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC).Format(http.TimeFormat) // before the fake clock's now
	for _, first := range []answer{status(503, "Retry-After", "0"), status(429, "Retry-After", "0"), status(503, "Retry-After", past)} {
		clock := newFakeClock()
		e := newEnv(t, false, setup, withClock(clock))
		e.script(first, okAnswer)
		if resp, _ := do(t, http.DefaultClient, "GET", e.proxy.URL+"/customers", nil); resp.StatusCode != 200 {
			t.Fatalf("app got %d, want the retry's 200", resp.StatusCode)
		}
		if waits := clock.slept(); len(waits) != 1 || waits[0] < 10*time.Millisecond || waits[0] >= 200*time.Millisecond {
			t.Errorf("waits %v, want one backoff from 10ms to 200ms", waits)
		}
	}
}

// Issue 21, point 6: an endpoint that answers 401 to every token (a scope
// the partner lacks) costs one token fetch, not one per request.
func TestEndpointRefusingEveryTokenCostsOneFetch(t *testing.T) {
	forEachSetup(t, testEndpointRefusingEveryTokenCostsOneFetch)
}

func testEndpointRefusingEveryTokenCostsOneFetch(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	e.script(status(401))
	const n = 100
	for range n {
		if resp, _ := do(t, http.DefaultClient, "GET", e.proxy.URL+"/scoped", nil); resp.StatusCode != 401 {
			t.Fatalf("app got %d, want the 401", resp.StatusCode)
		}
	}
	// One at start, one after the first 401.
	if f := e.fetches.Load(); f != 2 {
		t.Errorf("%d requests refused with 401 caused %d token fetches, want 2", n, f)
	}
	// The first is replayed with the fresh token, the others go once.
	if c := e.calls.Load(); c != n+1 {
		t.Errorf("upstream got %d requests, want %d", c, n+1)
	}
}

// Issue 21, point 7: TRACE and TRACK are answered 405, with a reason
// phrase that says so, and never forwarded: an upstream that echoes them
// would hand the app the injected token. A body after one is never taken
// as a request.
func TestTraceIsRefused(t *testing.T) { forEachSetup(t, testTraceIsRefused) }

func testTraceIsRefused(t *testing.T, setup envOption) {
	e := newEnv(t, false, setup)
	up, _ := url.Parse(e.upstream.URL)
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, raw := range []string{
		"TRACE /customers HTTP/1.1\r\nHost: x\r\n\r\n",
		"TRACK /customers HTTP/1.1\r\nHost: x\r\n\r\n",
		"TRACE http://" + up.Host + "/api/v3/customers HTTP/1.1\r\nHost: " + up.Host + "\r\n\r\n",
		"trace /customers HTTP/1.1\r\nHost: x\r\n\r\n",
		fmt.Sprintf("TRACE /customers HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled),
	} {
		method, _, _ := strings.Cut(raw, " ")
		resp, body, next := exchangeThenAsk(t, e, method, raw)
		assertProblem(t, resp, body, 405, proxy.CodeMethodNotAllowed)
		if resp.Status != "405 TRACE and TRACK are not forwarded" {
			t.Errorf("%s: status line %q does not say why", method, resp.Status)
		}
		if next != "" && next != "200" {
			t.Errorf("%s: after the refusal the connection answered %s", method, next)
		}
	}
	for _, s := range e.seenAll() {
		if s.Path != "/api/v3/after" {
			t.Errorf("the upstream got %s %s", s.Method, s.Path)
		}
	}
}

// exchangeThenAsk sends a raw request, reads its answer, then asks for
// /after on the same connection: next is that answer's status, or "" when
// the connection was closed.
func exchangeThenAsk(t *testing.T, e *env, method, raw string) (*http.Response, string, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, raw)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	io.WriteString(conn, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
	next, err := http.ReadResponse(br, nil)
	if err != nil {
		return resp, string(body), ""
	}
	next.Body.Close()
	return resp, string(body), fmt.Sprint(next.StatusCode)
}
