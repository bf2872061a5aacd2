// Package tokencache holds the Dinie access token: it fetches it with the
// OAuth2 client credentials grant (RFC 6749 §4.4) as Dinie documents
// POST /auth/token, hands it out without touching the network while it is
// valid, refreshes it in the background before it expires, and keeps serving
// the current token while the token endpoint misbehaves.
//
// Token is the hot path: an atomic load and a clock read, no lock, no
// allocation. Everything slow (the fetch, the retry policy) happens behind a
// singleflight so that at most one fetch is ever in flight.
package tokencache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Config configures a Cache. Only TokenURL and the credentials are required;
// every other zero value picks the default its comment names.
type Config struct {
	// TokenURL is the token endpoint, e.g.
	// https://api.dinie.com.br/api/v3/auth/token.
	TokenURL string

	// ClientID or ClientIDFile, and ClientSecret or ClientSecretFile: the
	// file wins when both are set. Files are re-read before every fetch and
	// polled every CredentialPollInterval, so a rotated Kubernetes Secret is
	// used without a restart.
	ClientID, ClientIDFile         string
	ClientSecret, ClientSecretFile string

	// RefreshBefore starts the background refresh when the token has this
	// much lifetime left, but never more than half its lifetime. Zero means
	// 5 minutes.
	RefreshBefore time.Duration

	// FetchTimeout bounds one fetch, whoever started it. Zero means 30 s.
	FetchTimeout time.Duration

	// MaxWait bounds how long Token waits for a fetch when no valid token
	// is held. Zero means only the caller's context bounds it.
	MaxWait time.Duration

	// RejectedRetryInterval is the pause after 400 or 401, when retrying
	// sooner cannot help until the credentials change. Zero means 30 s.
	RejectedRetryInterval time.Duration

	// MaxBackoff caps the exponential backoff after 5xx and network errors.
	// Zero means 30 s.
	MaxBackoff time.Duration

	// MaxRetryAfter caps how long a 429's Retry-After may hold fetches off.
	// Zero means 5 minutes.
	MaxRetryAfter time.Duration

	// CredentialPollInterval is how often credential files are checked for a
	// change. Zero means 1 s.
	CredentialPollInterval time.Duration

	// HTTPClient sends the fetches. Nil means a client on a clone of
	// http.DefaultTransport. Redirects are never followed: a redirected
	// token request would carry the credentials to another URL.
	HTTPClient *http.Client

	// Clock is the time source. Nil means RealClock.
	Clock Clock

	// Logger receives one line per fetch. Nil means no logs.
	Logger *zap.Logger

	// Registerer receives the token metrics. Nil means they are not
	// registered.
	Registerer prometheus.Registerer
}

const (
	backoffBase = time.Second
	// minRefreshGap spaces background attempts even if a token arrives
	// already due for refresh, so a tiny expires_in cannot make us spin.
	minRefreshGap = 100 * time.Millisecond
	// maxSafetyMargin is how long before its expiry a token stops being
	// handed out, so that it does not expire on its way to the upstream.
	maxSafetyMargin = 10 * time.Second
	// invalidateGap is how long after a 401 dropped a token a further 401
	// drops none: an endpoint that refuses every token (a scope the
	// partner lacks) must cost one fetch, not one per request.
	invalidateGap = 10 * time.Second
	flightKey     = "token"
)

// Cache holds one access token. Create it with New; start Run to fetch and
// refresh in the background. All methods are safe for concurrent use.
type Cache struct {
	tokenURL      string
	source        credentialSource
	refreshBefore time.Duration
	fetchTimeout  time.Duration
	maxWait       time.Duration
	rejectedRetry time.Duration
	maxBackoff    time.Duration
	maxRetryAfter time.Duration
	pollInterval  time.Duration
	client        *http.Client
	clock         Clock
	log           *zap.Logger
	metrics       metrics

	// life bounds fetches; it ends when Run returns so that no fetch
	// outlives the cache's owner.
	life     context.Context
	stopLife context.CancelFunc

	// current is read without a lock on the hot path. It is written only
	// with mu held, which makes Invalidate's compare-and-clear atomic.
	current atomic.Pointer[token]
	flight  singleflight.Group
	wake    chan struct{}

	mu        sync.Mutex
	creds     credentials // the last credentials read successfully
	notBefore time.Time   // no fetch may start before this
	failures  int         // consecutive failed fetches
	lastErr   error       // of the last fetch; nil after a success
	// invalidated is when a 401 last dropped the token; zero if never.
	invalidated time.Time
}

type token struct {
	value      string
	id         string    // short hash, to tell tokens apart in logs
	expiry     time.Time // as the endpoint said, counted from when the fetch was sent
	validUntil time.Time // expiry less a safety margin: handed out only before this
	refreshAt  time.Time
}

// New checks cfg and reads the credentials once, so that a missing file is
// reported at start-up. It starts nothing: call Run.
func New(cfg Config) (*Cache, error) {
	u, err := url.Parse(cfg.TokenURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("tokencache: token URL %q is not an absolute http(s) URL", redactURL(cfg.TokenURL))
	}
	c := &Cache{
		tokenURL:      cfg.TokenURL,
		source:        credentialSource{id: cfg.ClientID, idFile: cfg.ClientIDFile, secret: cfg.ClientSecret, secretFile: cfg.ClientSecretFile},
		refreshBefore: orDefault(cfg.RefreshBefore, 5*time.Minute),
		fetchTimeout:  orDefault(cfg.FetchTimeout, 30*time.Second),
		maxWait:       cfg.MaxWait,
		rejectedRetry: orDefault(cfg.RejectedRetryInterval, 30*time.Second),
		maxBackoff:    orDefault(cfg.MaxBackoff, 30*time.Second),
		maxRetryAfter: orDefault(cfg.MaxRetryAfter, 5*time.Minute),
		pollInterval:  orDefault(cfg.CredentialPollInterval, time.Second),
		client:        cfg.HTTPClient,
		clock:         cfg.Clock,
		log:           cfg.Logger,
		wake:          make(chan struct{}, 1),
	}
	if c.client == nil {
		c.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if c.client.CheckRedirect == nil {
		cl := *c.client
		cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		c.client = &cl
	}
	if c.clock == nil {
		c.clock = RealClock{}
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	if c.creds, err = c.source.load(); err != nil {
		return nil, err
	}
	if c.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	c.life, c.stopLife = context.WithCancel(context.Background())
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Token returns a valid access token. While one is held it returns at once
// without I/O. Otherwise it joins the single fetch in flight, or starts it,
// and waits until the fetch ends or ctx does; a caller that gives up does
// not cancel the fetch for the others. While the retry policy holds fetches
// off it fails at once with an *UnavailableError, so a broken token
// endpoint is never hammered however many requests arrive.
func (c *Cache) Token(ctx context.Context) (string, error) {
	if t := c.current.Load(); t != nil && c.clock.Now().Before(t.validUntil) {
		return t.value, nil
	}
	return c.await(ctx)
}

func (c *Cache) await(ctx context.Context) (string, error) {
	c.mu.Lock()
	now := c.clock.Now()
	if t := c.current.Load(); t != nil && now.Before(t.validUntil) {
		c.mu.Unlock()
		return t.value, nil
	}
	paused := c.pausedLocked(now)
	c.mu.Unlock()
	if paused != nil {
		return "", paused
	}

	var expired <-chan time.Time
	if c.maxWait > 0 {
		t := c.clock.NewTimer(c.maxWait)
		defer t.Stop()
		expired = t.C()
	}
	select {
	case r := <-c.flight.DoChan(flightKey, c.fetch):
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(*token).value, nil
	case <-expired:
		return "", &UnavailableError{Err: fmt.Errorf("token endpoint did not answer within %v", c.maxWait)}
	case <-ctx.Done():
		return "", fmt.Errorf("tokencache: wait for token: %w", context.Cause(ctx))
	}
}

// pausedLocked returns the error for callers while the retry policy holds
// fetches off, or nil. c.mu must be held.
func (c *Cache) pausedLocked(now time.Time) error {
	if now.Before(c.notBefore) {
		return &UnavailableError{Err: c.lastErr, RetryAt: c.notBefore}
	}
	return nil
}

// Invalidate drops token if, and only if, it is still the current one: the
// upstream answered 401 to it. A late 401 for a token that has since been
// replaced changes nothing, so a burst of 401s leads to one new fetch. Nor
// does a 401 within 10 s of the last one that dropped a token: the fetch that
// one caused is the only one (docs/operations.md, "How the token is handled").
// It reports whether the token was dropped.
func (c *Cache) Invalidate(value string) bool {
	c.mu.Lock()
	t := c.current.Load()
	now := c.clock.Now()
	if t == nil || t.value != value || !c.invalidated.IsZero() && now.Sub(c.invalidated) < invalidateGap {
		c.mu.Unlock()
		return false
	}
	c.current.Store(nil)
	c.invalidated = now
	c.mu.Unlock()
	// Zero, not the old expiry: dashboards and alerts must see that no
	// token is held until the next fetch succeeds.
	c.metrics.expiry.Set(0)
	c.log.Info("token invalidated after an upstream 401", zap.String("token_id", t.id))
	c.poke()
	return true
}

// Ready returns nil while a valid token is held, or an *UnavailableError
// that says why not.
func (c *Cache) Ready() error {
	if t := c.current.Load(); t != nil && c.clock.Now().Before(t.validUntil) {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return &UnavailableError{Err: c.lastErr, RetryAt: c.notBefore}
}

// Run fetches a token at once, then keeps it fresh and watches the
// credential files until ctx ends. It returns nil when ctx ends; once it
// has returned, the cache fetches no more tokens.
func (c *Cache) Run(ctx context.Context) error {
	defer c.stopLife()
	var wg sync.WaitGroup
	if c.source.hasFiles() {
		wg.Go(func() { c.watchCredentials(ctx) })
	}
	c.refreshLoop(ctx)
	wg.Wait()
	return nil
}

func (c *Cache) refreshLoop(ctx context.Context) {
	for ctx.Err() == nil {
		if c.untilNextFetch() <= 0 {
			select {
			case <-c.flight.DoChan(flightKey, c.fetch):
			case <-ctx.Done():
				return
			}
		}
		t := c.clock.NewTimer(max(c.untilNextFetch(), minRefreshGap))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-c.wake:
			t.Stop()
		}
	}
}

// untilNextFetch is how long the refresher should sleep: until the retry
// policy allows a fetch, or until the refresh time of a valid token; zero
// when a fetch is due now.
func (c *Cache) untilNextFetch() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	if now.Before(c.notBefore) {
		return c.notBefore.Sub(now)
	}
	t := c.current.Load()
	if t == nil || !now.Before(t.validUntil) {
		return 0
	}
	return max(t.refreshAt.Sub(now), 0)
}

func (c *Cache) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// fetch is the one function that talks to the token endpoint; it runs only
// inside the singleflight, under its own timeout rather than any caller's
// context.
func (c *Cache) fetch() (any, error) {
	// Re-check under the lock: a flight that ended just before this one
	// started may have stored a token or set a pause, and the policy must
	// hold however the callers raced to get here.
	c.mu.Lock()
	now := c.clock.Now()
	paused := c.pausedLocked(now)
	t := c.current.Load()
	c.mu.Unlock()
	if paused != nil {
		return nil, paused
	}
	if t != nil && now.Before(t.refreshAt) {
		return t, nil
	}

	ctx, cancel := context.WithTimeout(c.life, c.fetchTimeout)
	defer cancel()
	creds := c.loadCredentials()
	sent := c.clock.Now()
	resp, err := requestToken(ctx, c.client, c.tokenURL, creds, sent)
	now = c.clock.Now()
	c.metrics.duration.Observe(now.Sub(sent).Seconds())
	if err != nil {
		return nil, c.failed(err, now)
	}
	t = c.newToken(resp, sent)
	c.mu.Lock()
	c.current.Store(t)
	c.notBefore, c.failures, c.lastErr = time.Time{}, 0, nil
	c.mu.Unlock()
	c.metrics.fetches.WithLabelValues(string(ResultSuccess)).Inc()
	c.metrics.expiry.Set(float64(t.expiry.UnixMilli()) / 1e3)
	c.log.Info("token fetched",
		zap.String("token_id", t.id),
		zap.Int64("expires_in", resp.ExpiresIn),
		zap.Time("expires_at", t.expiry),
		zap.Time("refresh_at", t.refreshAt),
		zap.Duration("took", now.Sub(sent)))
	return t, nil
}

func (c *Cache) newToken(resp tokenResponse, sent time.Time) *token {
	lifetime := time.Duration(min(resp.ExpiresIn, int64(365*24*time.Hour/time.Second))) * time.Second
	expiry := sent.Add(lifetime)
	window := min(c.refreshBefore, lifetime/2)
	// Refresh up to 10% of the window early, so that a fleet of pods started
	// together does not hit the token endpoint in step.
	jitter := rand.N(window/10 + 1)
	sum := sha256.Sum256([]byte(resp.AccessToken))
	return &token{
		value:      resp.AccessToken,
		id:         hex.EncodeToString(sum[:4]),
		expiry:     expiry,
		validUntil: expiry.Add(-min(maxSafetyMargin, lifetime/10)),
		refreshAt:  expiry.Add(-window - jitter),
	}
}

// failed applies the retry policy (docs/operations.md, "How the token is
// handled") and returns the error for the callers that shared the fetch.
func (c *Cache) failed(err error, now time.Time) error {
	result := ResultError
	fe, isFetchErr := errors.AsType[*FetchError](err)
	if isFetchErr {
		result = fe.Result()
	}
	c.mu.Lock()
	c.failures++
	var wait time.Duration
	switch {
	case result == ResultRejected:
		wait = c.rejectedRetry
	case result == ResultRateLimited && fe.RetryAfter > 0:
		wait = min(fe.RetryAfter, c.maxRetryAfter)
	default:
		wait = c.backoff(c.failures)
	}
	c.notBefore, c.lastErr = now.Add(wait), err
	attempt, retryAt := c.failures, c.notBefore
	c.mu.Unlock()

	c.metrics.fetches.WithLabelValues(string(result)).Inc()
	fields := []zap.Field{
		zap.String("result", string(result)),
		zap.Int("attempt", attempt),
		zap.Time("retry_at", retryAt),
		zap.Error(err),
	}
	if isFetchErr {
		fields = append(fields, zap.Int("status", fe.StatusCode))
		if p := fe.Problem; p != nil {
			fields = append(fields, zap.String("title", p.Title), zap.String("detail", p.Detail), zap.String("code", p.Code))
		}
	}
	if result == ResultRejected {
		c.log.Error("token endpoint rejected the credentials", fields...)
	} else {
		c.log.Warn("token fetch failed", fields...)
	}
	return &UnavailableError{Err: err, RetryAt: retryAt}
}

// backoff is capped exponential backoff with full jitter: a random wait in
// [0, min(max, base·2^(n-1))], floored so that a retry is never immediate.
func (c *Cache) backoff(failures int) time.Duration {
	ceiling := c.maxBackoff
	if failures < 32 {
		ceiling = min(ceiling, backoffBase<<(failures-1))
	}
	return max(rand.N(ceiling+1), minRefreshGap)
}

// loadCredentials re-reads the credentials (see credentialSource.load for
// why). If a file cannot be read right now, the last good values are kept:
// a Secret being replaced must not stop a working proxy.
func (c *Cache) loadCredentials() credentials {
	creds, _, err := c.reloadCredentials()
	if err != nil {
		c.log.Warn("cannot read credentials; using the last values read", zap.Error(err))
	}
	return creds
}

func (c *Cache) reloadCredentials() (creds credentials, changed bool, err error) {
	fresh, err := c.source.load()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		return c.creds, false, err
	}
	changed = fresh != c.creds
	c.creds = fresh
	return fresh, changed, nil
}

// watchCredentials notices rotated credential files within pollInterval.
// After a rejection it lifts the 30 s pause at once: the new credentials
// deserve a try now.
func (c *Cache) watchCredentials(ctx context.Context) {
	for {
		t := c.clock.NewTimer(c.pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		_, changed, err := c.reloadCredentials()
		if err != nil || !changed {
			continue
		}
		c.mu.Lock()
		fe, ok := errors.AsType[*FetchError](c.lastErr)
		if ok && fe.Result() == ResultRejected {
			c.notBefore = time.Time{}
		}
		c.mu.Unlock()
		c.log.Info("credentials changed; the next fetch uses them")
		c.poke()
	}
}

// UnavailableError is returned when no valid token is held and none can be
// had now. Its message is meant for the 503 an application receives.
type UnavailableError struct {
	// Err is the last fetch's error (usually a *FetchError), or nil when no
	// fetch has finished yet.
	Err error
	// RetryAt is when the next fetch may start; zero when it may start now.
	RetryAt time.Time
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	b.WriteString("tokencache: no valid token")
	if e.Err == nil {
		b.WriteString(": none fetched yet")
	} else {
		if fe, ok := errors.AsType[*FetchError](e.Err); ok {
			switch fe.Result() {
			case ResultRejected:
				b.WriteString(": credentials rejected")
			case ResultRateLimited:
				b.WriteString(": rate limited")
			}
		}
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if !e.RetryAt.IsZero() {
		b.WriteString("; next attempt at ")
		b.WriteString(e.RetryAt.UTC().Format(time.RFC3339))
	}
	return b.String()
}

func (e *UnavailableError) Unwrap() error { return e.Err }

type metrics struct {
	fetches  *prometheus.CounterVec
	duration prometheus.Histogram
	expiry   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinie_proxy_token_fetches_total",
			Help: "Token endpoint fetches by result: success, rejected (400/401), rate_limited (429), error.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dinie_proxy_token_fetch_duration_seconds",
			Help:    "Time taken by token endpoint fetches, failed ones included.",
			Buckets: prometheus.DefBuckets,
		}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinie_proxy_token_expiry_timestamp_seconds",
			Help: "Unix time at which the current access token expires.",
		}),
	}
	// Every result starts at zero, so that rate() and alerts see the series
	// before the first failure.
	for _, r := range []Result{ResultSuccess, ResultRejected, ResultRateLimited, ResultError} {
		m.fetches.WithLabelValues(string(r))
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.fetches, m.duration, m.expiry} {
		if err := reg.Register(col); err != nil {
			return metrics{}, fmt.Errorf("tokencache: register metrics: %w", err)
		}
	}
	return m, nil
}
