package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// observe counts each request in its own method's and status's series,
// whatever the request before it was (the last series is kept aside).
func TestObserveCountsEachSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		method string
		code   int
	}{{"get", 200}, {"get", 200}, {"post", 201}, {"get", 200}, {"get", 404}, {"post", 201}, {"post", 200}} {
		m.observe(r.method, r.code, time.Millisecond)
	}
	want := `
# HELP dinie_proxy_requests_total Proxied requests by method and status, the proxy's own error answers included.
# TYPE dinie_proxy_requests_total counter
dinie_proxy_requests_total{code="200",method="get"} 3
dinie_proxy_requests_total{code="200",method="post"} 1
dinie_proxy_requests_total{code="201",method="post"} 2
dinie_proxy_requests_total{code="404",method="get"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "dinie_proxy_requests_total"); err != nil {
		t.Error(err)
	}
}
