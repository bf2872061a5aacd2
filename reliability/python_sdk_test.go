//go:build reliability

package reliability

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pythonDinie is a fake Dinie for the Python SDK's client: a token
// endpoint, the session exchange, /loans that answers 503 (Retry-After: 0)
// to the first try of each Idempotency-Key, and /me that echoes the
// Authorization it got. It keeps what each request carried.
type pythonDinie struct {
	srv    *httptest.Server
	caFile string

	mu   sync.Mutex
	seen []pythonSeen
}

type pythonSeen struct {
	path, auth, key, xKey, retryCount string
}

func newPythonDinie(t *testing.T) *pythonDinie {
	d := &pythonDinie{}
	keys := map[string]int{}
	d.srv, d.caFile = serveAsDinie(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/api/v3/auth/token" {
			if _, secret, _ := r.BasicAuth(); secret != secret1 {
				writeProblemJSON(w, 401, "invalid_client", "fake: bad secret")
				return
			}
			fmt.Fprintf(w, `{"access_token":"%spy","token_type":"bearer","expires_in":3600}`, tokenStem)
			return
		}
		s := pythonSeen{r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Idempotency-Key"),
			r.Header.Get("X-Idempotency-Key"), r.Header.Get("X-Dinie-Retry-Count")}
		d.mu.Lock()
		d.seen = append(d.seen, s)
		keys[s.key]++
		first := keys[s.key] == 1
		d.mu.Unlock()
		switch r.URL.Path {
		case "/api/v3/biometrics/session-exchange":
			io.WriteString(w, `{"access_token":"fake-customer-session-1","token_type":"bearer","expires_in":1800,"customer_id":"cus_fake"}`)
		case "/api/v3/loans":
			if first {
				w.Header().Set("Retry-After", "0")
				writeProblemJSON(w, 503, "service_unavailable", "fake: deploying")
				return
			}
			io.WriteString(w, `{"id":"loan_fake"}`)
		case "/api/v3/me":
			json.NewEncoder(w).Encode(map[string]string{"auth": s.auth})
		default:
			writeProblemJSON(w, 404, "not_found", "fake: no such path")
		}
	}))
	return d
}

func (d *pythonDinie) seenOn(path string) []pythonSeen {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []pythonSeen
	for _, s := range d.seen {
		if s.path == path {
			out = append(out, s)
		}
	}
	return out
}

// pythonWithHTTPX is a Python that has httpx, as the SDK needs: Debian's
// python3-httpx is for /usr/bin/python3, which may not be the python3 on
// PATH.
func pythonWithHTTPX(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(py, "-c", "import httpx").Run() == nil {
			return py
		}
	}
	needTool(t, "python3-httpx") // fails in CI, skips elsewhere
	return ""
}

// TestPythonSDKThroughTheProxy runs a client that sends what Dinie's
// Python SDK sends (testdata/pysdk/client.py names the SDK's source), in
// base-URL mode, against the real binary on both transports: its JSON
// token request gets the stand-in, its POSTs reach Dinie with the key
// under X-Idempotency-Key and are never sent twice by the proxy (the SDK
// retries on its own), and its session mode's customer token reaches Dinie
// as the SDK sent it.
func TestPythonSDKThroughTheProxy(t *testing.T) {
	needDinieHost(t)
	py := pythonWithHTTPX(t)
	script, _ := filepath.Abs("testdata/pysdk/client.py")
	for _, transport := range []string{"http1", "standard"} {
		t.Run(transport, func(t *testing.T) {
			d := newPythonDinie(t)
			_, port, _ := strings.Cut(d.srv.Listener.Addr().String(), ":")
			p := startProxy(t, map[string]string{
				"DINIE_PROXY_UPSTREAM_URL":       "https://" + dinieHost + ":" + port + "/api/v3",
				"DINIE_PROXY_UPSTREAM_CA_FILE":   d.caFile,
				"DINIE_PROXY_UPSTREAM_TRANSPORT": transport,
				"DINIE_PROXY_AUTH_CLIENT_ID":     "fake-client",
				"DINIE_PROXY_AUTH_CLIENT_SECRET": secret1,
			})
			p.waitReady(t, 10*time.Second)
			run := func(args ...string) (status, tries int, body string) {
				t.Helper()
				out, err := exec.Command(py, append([]string{script, p.proxyURL}, args...)...).CombinedOutput()
				if err != nil {
					t.Fatalf("the Python client failed: %v\n%s", err, out)
				}
				var r struct {
					Status, Tries int
					Body          string
				}
				if err := json.Unmarshal(out, &r); err != nil {
					t.Fatalf("the Python client printed %q", out)
				}
				return r.Status, r.Tries, r.Body
			}

			const posts = 5
			for range posts {
				if status, tries, _ := run("post", "/loans"); status != 200 || tries != 2 {
					t.Errorf("POST /loans: %d after %d tries, want 200 after the SDK's own retry", status, tries)
				}
			}
			loans := d.seenOn("/api/v3/loans")
			t.Logf("%s: %d SDK POSTs reached Dinie %d times", transport, posts, len(loans))
			if len(loans) != 2*posts {
				t.Errorf("Dinie saw %d POSTs for %d SDK calls of 2 tries each: the proxy sent some twice", len(loans), posts)
			}
			for i, s := range loans {
				wantRetry := map[bool]string{true: "", false: "1"}[i%2 == 0]
				if s.key == "" || s.xKey != s.key || s.retryCount != wantRetry || s.auth != "Bearer "+tokenStem+"py" {
					t.Errorf("POST %d reached Dinie with key %q, X-Idempotency-Key %q, retry count %q; want the key in both, count %q, the proxy's token",
						i, s.key, s.xKey, s.retryCount, wantRetry)
				}
			}

			status, _, body := run("session", "dinie_bsc_fake", "/me")
			if status != 200 || !strings.Contains(body, `"auth":"Bearer fake-customer-session-1"`) {
				t.Errorf("session mode: %d %s; want Dinie to see the customer token", status, body)
			}
			if ex := d.seenOn("/api/v3/biometrics/session-exchange"); len(ex) != 1 || ex[0].auth != "Bearer "+tokenStem+"py" {
				t.Errorf("the session exchange reached Dinie %d times, or without the partner token", len(ex))
			}
		})
	}
}
