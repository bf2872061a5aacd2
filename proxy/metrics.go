package proxy

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// statusLabel is the code label of a status, from a table made once so that
// recording a request allocates nothing.
func (m *metrics) statusLabel(code int) string {
	if code >= 0 && code < len(m.codes) {
		return m.codes[code]
	}
	return strconv.Itoa(code)
}

// metrics are the proxy's Prometheus metrics (docs/operations.md, "Health and
// metrics"), all of them, registered on the Registerer that Config names.
type metrics struct {
	codes    [600]string // strconv.Itoa of each status
	seriesMu sync.RWMutex
	series   map[seriesKey]*requestSeries
	// lastSeries is the series observe counted last: a request is nearly
	// always of the method and status of the one before, and this spares
	// it the lock and the map.
	lastSeries    atomic.Pointer[requestSeries]
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	inFlight      prometheus.Gauge
	replays401    prometheus.Counter // requests sent again with a fresh token after a 401
	tunnels       *prometheus.CounterVec
	overloaded    prometheus.Counter
	rateLimit     prometheus.Gauge
	rateRemaining prometheus.Gauge
	rateReset     prometheus.Gauge

	// retryVec is dinie_proxy_upstream_retries_total; upstreamRetries its
	// series, one per retryReason.
	retryVec        *prometheus.CounterVec
	upstreamRetries [retryReasons]prometheus.Counter
	// retryBudgetExhausted counts transient failures that went to the app
	// because the retry budget was spent.
	retryBudgetExhausted prometheus.Counter
	// sessionTokens is how many session tokens are remembered now.
	sessionTokens prometheus.Gauge
}

type seriesKey struct {
	method string // a methodLabel
	code   int
}

// requestSeries is the counter and histogram of one method and status.
type requestSeries struct {
	key      seriesKey
	count    prometheus.Counter
	duration prometheus.Observer
}

// observe counts a request. Its series are looked up by method label and
// status in a map of our own: WithLabelValues hashes both strings and
// takes the vector's lock, twice per request (once per vector).
func (m *metrics) observe(method string, code int, elapsed time.Duration) {
	k := seriesKey{method, code}
	s := m.lastSeries.Load()
	if s == nil || s.key != k {
		s = m.requestSeries(k)
		m.lastSeries.Store(s)
	}
	s.count.Inc()
	s.duration.Observe(elapsed.Seconds())
}

// requestSeries returns the series of k, made on first use.
func (m *metrics) requestSeries(k seriesKey) *requestSeries {
	m.seriesMu.RLock()
	s, ok := m.series[k]
	m.seriesMu.RUnlock()
	if !ok {
		label := m.statusLabel(k.code)
		s = &requestSeries{k, m.requests.WithLabelValues(k.method, label), m.duration.WithLabelValues(k.method, label)}
		m.seriesMu.Lock()
		m.series[k] = s // few: methods are ten labels, statuses three digits
		m.seriesMu.Unlock()
	}
	return s
}

// upstreamGauge is one of the gauges of Dinie's rate-limit headers.
func upstreamGauge(suffix, header string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "dinie_proxy_upstream_ratelimit_" + suffix,
		Help: "The upstream's latest " + header + ".",
	})
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinie_proxy_requests_total",
			Help: "Proxied requests by method and status, the proxy's own error answers included.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dinie_proxy_request_duration_seconds",
			Help:    "Time to answer proxied requests, by method and status.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"method", "code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinie_proxy_requests_in_flight",
			Help: "Proxied requests being served.",
		}),
		replays401: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinie_proxy_upstream_401_retries_total",
			Help: "Requests sent again with a fresh token after the upstream answered 401.",
		}),
		tunnels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinie_proxy_tunnels_total",
			Help: "CONNECT requests by result: intercepted, plain (a tunnel to the upstream's HTTP port), passthrough, refused, handshake_failed.",
		}, []string{"result"}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinie_proxy_overloaded_total",
			Help: "Requests answered 503 overloaded: limits.max_in_flight requests were already being served.",
		}),
		rateLimit:     upstreamGauge("limit", "X-RateLimit-Limit"),
		rateRemaining: upstreamGauge("remaining", "X-RateLimit-Remaining"),
		rateReset:     upstreamGauge("reset_timestamp_seconds", "X-RateLimit-Reset, a Unix time"),
		retryBudgetExhausted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinie_proxy_retry_budget_exhausted_total",
			Help: "Transient upstream failures passed to the app without a retry because retries in the last 10 s already reached 20% of the requests (at least 3).",
		}),
		sessionTokens: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinie_proxy_session_tokens",
			Help: "Customer-scoped session tokens remembered now, whose requests are passed on with their own Authorization.",
		}),
	}
	m.retryVec, m.upstreamRetries = newRetryCounters()
	for i := range m.codes {
		m.codes[i] = strconv.Itoa(i)
	}
	m.series = make(map[seriesKey]*requestSeries)
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inFlight, m.replays401, m.retryVec, m.retryBudgetExhausted, m.sessionTokens, m.tunnels, m.overloaded, m.rateLimit, m.rateRemaining, m.rateReset} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("proxy: register metrics: %w", err)
		}
	}
	return m, nil
}

// rateLimitHeaders are Dinie's rate-limit headers of one answer, as it
// sent them (nil where absent).
type rateLimitHeaders struct{ limit, remaining, reset []string }

// observeRateLimit exports the rate-limit headers of an answer that does
// not go to the app (a 401 replayed, a try retried); forward exports those
// of the one that does, seen in the pass that cleans its header.
func (m *metrics) observeRateLimit(h http.Header) {
	m.setRateLimit(rateLimitHeaders{h["X-Ratelimit-Limit"], h["X-Ratelimit-Remaining"], h["X-Ratelimit-Reset"]})
}

// setRateLimit exports Dinie's rate-limit headers. Absent headers leave
// the gauges as they are; malformed ones are ignored.
func (m *metrics) setRateLimit(r rateLimitHeaders) {
	setFromHeader(m.rateLimit, r.limit)
	setFromHeader(m.rateRemaining, r.remaining)
	setFromHeader(m.rateReset, r.reset)
}

func setFromHeader(g prometheus.Gauge, vv []string) {
	if len(vv) == 0 || vv[0] == "" {
		return
	}
	f, err := strconv.ParseFloat(vv[0], 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return
	}
	g.Set(f)
}

func newRetryCounters() (*prometheus.CounterVec, [retryReasons]prometheus.Counter) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dinie_proxy_upstream_retries_total",
		Help: "Requests sent again after a transient failure of the upstream, by reason: unreachable, unavailable (502/503/504), rate_limited (429).",
	}, []string{"reason"})
	var c [retryReasons]prometheus.Counter
	for i, l := range retryReasonLabels {
		// Made now, so that every series exists from the start and a retry
		// looks nothing up.
		c[i] = vec.WithLabelValues(l)
	}
	return vec, c
}
