// Command fasthttp is a reference target for bench/run.sh, not part of the
// product: a Go proxy for the same job with valyala/fasthttp on both sides,
// to tell how much of the gap to nginx is net/http's HTTP/1 server and
// client (bench/README.md). It lives in its own module so that fasthttp
// never enters the product's go.mod.
//
// Bare (the default), it adds a static Bearer header and nothing else: the
// least a Go proxy can do. With -full it also does the sidecar's
// per-request work, with the product's own token cache: the token from
// tokencache, hop-by-hop headers dropped both ways, X-Request-Id, the
// request metrics, the access log's level check, and the 401 replay. It
// still buffers whole bodies (fasthttp's default), so it has no streaming:
// that would cost more again.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/dinie/dinie-auth-proxy/tokencache"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	upstream := flag.String("upstream", "", "upstream host:port, spoken to over HTTPS")
	caFile := flag.String("ca", "", "PEM file of the CA that signed the upstream's certificate")
	full := flag.Bool("full", false, "do the sidecar's per-request work too")
	flag.Parse()
	if err := run(*listen, *upstream, *caFile, *full); err != nil {
		fmt.Fprintln(os.Stderr, "fasthttp:", err)
		os.Exit(1)
	}
}

func run(listen, upstream, caFile string, full bool) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", caFile)
	}
	tlsConfig := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	client := &fasthttp.HostClient{Addr: upstream, IsTLS: true, TLSConfig: tlsConfig, MaxConns: 512}
	if !full {
		return fasthttp.ListenAndServe(listen, func(ctx *fasthttp.RequestCtx) {
			req := &ctx.Request
			req.Header.Set("Authorization", "Bearer fake-bench-token")
			req.URI().SetScheme("https")
			req.URI().SetHost(upstream)
			if err := client.Do(req, &ctx.Response); err != nil {
				ctx.Error("bad gateway", fasthttp.StatusBadGateway)
			}
		})
	}

	cache, err := tokencache.New(tokencache.Config{
		TokenURL:     "https://" + upstream + "/api/v3/auth/token",
		ClientID:     "fake-bench-id",
		ClientSecret: "fake-bench-secret",
		HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}},
	})
	if err != nil {
		return err
	}
	// The refresher lives as long as the process, which run.sh ends with a
	// signal: a reference target has no shutdown to drain.
	go cache.Run(context.Background())
	p := &fullProxy{
		upstream: upstream,
		client:   client,
		tokens:   cache,
		log:      zap.NewNop(), // the access log's level check, as at log.level warn
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "requests_total"}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "request_duration_seconds",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"method", "code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "requests_in_flight"}),
	}
	return fasthttp.ListenAndServe(listen, p.serve)
}

type fullProxy struct {
	upstream string
	client   *fasthttp.HostClient
	tokens   *tokencache.Cache
	log      *zap.Logger
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

// hopByHop are dropped both ways; appOnly also from the app's request, as
// the product does.
var (
	hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}
	appOnly = []string{"Authorization", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}
)

func (p *fullProxy) serve(ctx *fasthttp.RequestCtx) {
	p.inFlight.Inc()
	defer p.inFlight.Dec()
	start := time.Now()
	req := &ctx.Request
	id := string(req.Header.Peek("X-Request-Id"))
	if id == "" {
		id = strconv.FormatUint(rand.Uint64(), 16)
		req.Header.Set("X-Request-Id", id)
	}
	for _, h := range hopByHop {
		req.Header.Del(h)
	}
	for _, h := range appOnly {
		req.Header.Del(h)
	}
	req.URI().SetScheme("https")
	req.URI().SetHost(p.upstream)
	p.forward(ctx)
	for _, h := range hopByHop {
		ctx.Response.Header.Del(h)
	}
	elapsed := time.Since(start)
	method, code := string(ctx.Method()), strconv.Itoa(ctx.Response.StatusCode())
	p.requests.WithLabelValues(method, code).Inc()
	p.duration.WithLabelValues(method, code).Observe(elapsed.Seconds())
	if ce := p.log.Check(zap.InfoLevel, "request"); ce != nil {
		ce.Write(zap.String("request_id", id))
	}
}

func (p *fullProxy) forward(ctx *fasthttp.RequestCtx) {
	for attempt := 0; ; attempt++ {
		tok, err := p.tokens.Token(ctx)
		if err != nil {
			problem(ctx, fasthttp.StatusServiceUnavailable, "token_unavailable")
			return
		}
		ctx.Request.Header.Set("Authorization", "Bearer "+tok)
		if err := p.client.Do(&ctx.Request, &ctx.Response); err != nil {
			problem(ctx, fasthttp.StatusBadGateway, "upstream_unreachable")
			return
		}
		if ctx.Response.StatusCode() != fasthttp.StatusUnauthorized || attempt > 0 {
			return
		}
		p.tokens.Invalidate(tok)
	}
}

func problem(ctx *fasthttp.RequestCtx, status int, code string) {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"type":"urn:dinie-auth-proxy:problem:%s","status":%d,"code":%q}`, code, status, code)
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/problem+json")
	ctx.SetBody(b.Bytes())
}
