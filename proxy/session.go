package proxy

import (
	"bytes"
	"container/heap"
	"crypto/sha256"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// sessionExchangePath is where Dinie's SDKs exchange a single-use code
// (dinie_bsc_...) for a customer-scoped token, under the base URL's prefix
// (docs/modes-and-clients.md, "Session tokens").
const sessionExchangePath = "/biometrics/session-exchange"

// sessionGrace is how long a session token is remembered after it
// expires. An SDK may send its token after that (it cannot refresh a
// session token): passed on as sent, Dinie answers it with its own 401,
// which the SDK turns into its session-expired error. Replaced, it would
// reach Dinie with the partner token and succeed with partner scope.
const sessionGrace = 24 * time.Hour

// maxExchangeAnswer bounds the exchange's answer read to find the token:
// Dinie's is a few hundred bytes. A longer one is passed on unread.
const maxExchangeAnswer = 64 << 10

// sessionTokens remembers the session tokens that Dinie issued through
// this proxy until sessionGrace after they expire, so that the requests that carry one are
// passed on with it instead of the partner token: replacing it would make the
// app act with a scope it did not ask for (docs/modes-and-clients.md, "Session
// tokens").
//
// Only SHA-256 hashes are kept: a heap dump shows no token. At most max
// are remembered; the soonest to expire goes first.
type sessionTokens struct {
	max   int
	clock Clock
	gauge prometheus.Gauge
	// held mirrors len(byHash), so that a request with a Bearer token
	// skips the lock while none is remembered.
	held atomic.Int64

	mu     sync.Mutex
	byHash map[[sha256.Size]byte]*sessionToken
	expiry expiryHeap
}

// sessionToken is one remembered token: its hash, when it expires, and its
// place in the heap.
type sessionToken struct {
	hash   [sha256.Size]byte
	expiry time.Time
	index  int
}

func newSessionTokens(max int, clock Clock, gauge prometheus.Gauge) *sessionTokens {
	return &sessionTokens{max: max, clock: clock, gauge: gauge, byHash: make(map[[sha256.Size]byte]*sessionToken)}
}

// remember keeps token until expiry.
func (s *sessionTokens) remember(token string, expiry time.Time) {
	h := sha256.Sum256([]byte(token))
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.byHash[h]; ok {
		t.expiry = expiry
		heap.Fix(&s.expiry, t.index)
		return
	}
	s.dropExpired(now)
	for len(s.byHash) >= s.max {
		s.drop(s.expiry[0])
	}
	t := &sessionToken{hash: h, expiry: expiry}
	heap.Push(&s.expiry, t)
	s.byHash[h] = t
	s.changed()
}

// has reports whether token is remembered and has not expired.
func (s *sessionTokens) has(token string) bool {
	if s.held.Load() == 0 {
		return false
	}
	h := sha256.Sum256([]byte(token))
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropExpired(now)
	_, ok := s.byHash[h]
	return ok
}

// dropExpired forgets the tokens that have expired. s.mu is held.
func (s *sessionTokens) dropExpired(now time.Time) {
	for len(s.expiry) > 0 && !now.Before(s.expiry[0].expiry) {
		s.drop(s.expiry[0])
	}
}

// drop forgets t. s.mu is held.
func (s *sessionTokens) drop(t *sessionToken) {
	heap.Remove(&s.expiry, t.index)
	delete(s.byHash, t.hash)
	s.changed()
}

func (s *sessionTokens) changed() {
	s.held.Store(int64(len(s.byHash)))
	s.gauge.Set(float64(len(s.byHash)))
}

// expiryHeap orders the remembered tokens soonest to expire first
// (container/heap).
type expiryHeap []*sessionToken

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiry.Before(h[j].expiry) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *expiryHeap) Push(x any) {
	t := x.(*sessionToken)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *expiryHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return t
}

// passedBearer returns the app's Authorization header when it is to be
// passed on unchanged: a Bearer session token remembered, or with
// auth.pass_bearer any, every Bearer token but the stand-in. Nil means the
// header is replaced by the partner token, as every other is.
func (h *Handler) passedBearer(auth []string) []string {
	if len(auth) != 1 {
		return nil
	}
	// The scheme is case-insensitive (RFC 9110, section 11.1).
	const scheme = "bearer "
	v := auth[0]
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return nil
	}
	token := strings.TrimSpace(v[len(scheme):])
	if token == "" || token == StandInToken {
		return nil
	}
	if h.passAnyBearer || h.sessions.has(token) {
		return auth
	}
	return nil
}

// isSessionExchange reports whether out, as sent upstream, is the
// session exchange.
func (h *Handler) isSessionExchange(out *http.Request) bool {
	return out.Method == http.MethodPost && out.URL.Path == h.sessionExchange
}

// rememberSession reads the session exchange's 200 answer for the token
// Dinie issued, and remembers it; the answer goes on to the app unchanged,
// as resp.Body. An answer without a non-empty access_token and a positive
// expires_in is passed on and nothing is remembered.
func (h *Handler) rememberSession(resp *http.Response) {
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxExchangeAnswer+1))
	resp.Body = readAndClose{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	if err != nil || len(head) > maxExchangeAnswer {
		return
	}
	var answer struct {
		AccessToken string  `json:"access_token"`
		ExpiresIn   float64 `json:"expires_in"`
	}
	if json.Unmarshal(head, &answer) != nil || answer.AccessToken == "" || !(answer.ExpiresIn > 0) || math.IsInf(answer.ExpiresIn, 0) {
		h.log.Warn("the session exchange answered 200 without a token and expiry the proxy could read: requests with that token get the partner token")
		return
	}
	// A year at most, as for the partner token: a huge expires_in must not
	// overflow the clock.
	lifetime := time.Duration(min(answer.ExpiresIn, 365*24*3600) * float64(time.Second))
	h.sessions.remember(answer.AccessToken, h.clock.Now().Add(lifetime+sessionGrace))
}

// readAndClose is a body read from one reader and closed through another.
type readAndClose struct {
	io.Reader
	io.Closer
}
