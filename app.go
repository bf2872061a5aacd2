package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/dinie/dinie-auth-proxy/internal/h1"
	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// app is the program's parts, assembled from the configuration: the
// listeners, bound first so that a busy port fails the start, and the
// servers, token cache and handler behind them.
type app struct {
	cfg          config
	log          *zap.Logger
	cache        *tokencache.Cache
	interception *interception
	servers      []served // shut down in this order
	draining     atomic.Bool
	// listeners are closed by close, whatever happened; Shutdown has
	// usually closed them already.
	listeners []net.Listener
}

// served is a server and the listener it serves.
type served struct {
	srv server
	ln  net.Listener
}

// server is what app needs of http.Server and h1.Server.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// newApp builds the program; stdout gets the demo's instructions. The
// caller closes it.
func newApp(cfg config, opts options, log *zap.Logger, stdout io.Writer) (_ *app, err error) {
	a := &app{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	proxyLn, err := a.listen("listen.proxy", cfg.listenProxy)
	if err != nil {
		return nil, err
	}
	adminLn, err := a.listen("listen.admin", cfg.listenAdmin)
	if err != nil {
		return nil, err
	}
	var mock net.Listener
	if opts.demo {
		if mock, err = a.listen("demo", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		cfg.upstreamURL = &url.URL{Scheme: "http", Host: mock.Addr().String(), Path: "/api/v3"}
		cfg.tokenURL = cfg.upstreamURL.String() + "/auth/token"
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The CA's files are written before the admin server, and with it
	// /readyz, starts.
	if a.interception, err = newInterception(cfg, log, reg); err != nil {
		return nil, err
	}
	// The token endpoint is called once an hour: net/http's transport serves
	// it. Requests go through the configured one.
	standard := standardTransport(cfg)
	var upstream http.RoundTripper = standard
	if cfg.transport == "http1" {
		if upstream, err = h1.NewTransport(cfg.upstreamURL, h1.TransportConfig{
			ResponseHeaderTimeout: cfg.upstreamTimeout, RootCAs: cfg.rootCAs,
			// The proxy's rule: a bare Idempotency-Key does not make a
			// request resend-safe (docs/operations.md, "Retries").
			Resendable: proxy.Resendable,
		}); err != nil {
			return nil, err
		}
	}
	a.cache, err = tokencache.New(tokencache.Config{
		TokenURL:         cfg.tokenURL,
		ClientID:         cfg.clientID,
		ClientIDFile:     cfg.clientIDFile,
		ClientSecret:     cfg.clientSecret,
		ClientSecretFile: cfg.clientSecretFile,
		RefreshBefore:    cfg.refreshBefore,
		FetchTimeout:     cfg.upstreamTimeout,
		MaxWait:          cfg.upstreamTimeout,
		HTTPClient:       &http.Client{Transport: standard},
		Logger:           log.Named("token"),
		Registerer:       reg,
	})
	if err != nil {
		return nil, err
	}
	handler, err := proxy.New(proxy.Config{
		Upstream:          cfg.upstreamURL,
		Tokens:            a.cache,
		Transport:         upstream,
		RecycleRequests:   cfg.transport == "http1",
		UpstreamTimeout:   cfg.upstreamTimeout,
		MaxReplayBytes:    cfg.maxReplayBytes,
		ReplayBudgetBytes: cfg.replayBudget,
		MaxInFlight:       cfg.maxInFlight,
		Retries:           cfg.retries,
		RetryMaxWait:      cfg.retryMaxWait,
		IdempotencyKeys:   cfg.idempotencyKeys,
		PassAnyBearer:     cfg.passAnyBearer,
		SessionTokensMax:  cfg.sessionTokensMax,
		Logger:            log.Named("proxy"),
		Registerer:        reg,
		ListenAddr:        proxyLn.Addr().String(),
		NewServer:         func(h http.Handler) proxy.Server { return newProxyServer(cfg.proxyServer, h, log) },
		Intercept:         a.interception.tlsConfig(),
		InterceptCAFile:   a.interception.caFile(),
		Passthrough:       cfg.intercept.passthrough,
		MaxTunnels:        cfg.maxTunnels,
	})
	if err != nil {
		return nil, err
	}

	// The proxy (and the tunnels it opened) first, while the admin listener
	// and the demo's mock keep serving.
	a.servers = []served{
		{handler, proxyLn},
		{newServer(adminHandler(reg, a.cache.Ready, &a.draining), log), adminLn},
	}
	if opts.demo {
		a.servers = append(a.servers, served{newServer(mockDinie(), log), mock})
	}
	log.Info("listening",
		zap.String("version", version),
		zap.String("proxy_addr", proxyLn.Addr().String()),
		zap.String("admin_addr", adminLn.Addr().String()),
		zap.String("upstream", cfg.upstreamURL.String()))
	log.Sync() // the start is worth seeing at once; the rest may wait a second
	if opts.demo {
		fmt.Fprintf(stdout, "Demo: the proxy is in front of a mock Dinie API at %s.\nTry:\n\n  curl -s http://%s/customers?limit=10\n\nThe mock echoes what it received, the injected token shortened. Ctrl-C stops.\n",
			mock.Addr(), proxyLn.Addr())
	}
	return a, nil
}

func (a *app) listen(key, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	a.listeners = append(a.listeners, ln)
	return ln, nil
}

func (a *app) close() {
	for _, ln := range a.listeners {
		ln.Close()
	}
}

// serve runs until ctx ends, then shuts down: /readyz turns 503, the
// servers stop accepting and let their requests finish for up to
// shutdown.timeout (README, "Health and metrics").
func (a *app) serve(ctx context.Context) error {
	// The cache outlives the servers: requests still draining after SIGTERM
	// may need a token.
	cacheCtx, stopCache := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCache()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.cache.Run(cacheCtx) })
	g.Go(func() error { return a.interception.run(cacheCtx) })
	for _, s := range a.servers {
		g.Go(func() error {
			if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve %s: %w", s.ln.Addr(), err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		a.shutdown()
		stopCache()
		return nil
	})
	return g.Wait()
}

func (a *app) shutdown() {
	a.draining.Store(true)
	a.log.Info("shutting down", zap.Duration("timeout", a.cfg.shutdownTimeout))
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.shutdownTimeout)
	defer cancel()
	for _, s := range a.servers {
		if err := s.srv.Shutdown(ctx); err != nil {
			a.log.Warn("requests cut off at shutdown.timeout", zap.Error(err))
			s.srv.Close()
		}
	}
}

// standardTransport is net/http's transport as a sidecar needs it: every
// request of one app goes to one host, so the keep-alive pool is sized for
// hundreds of concurrent requests to it, and HTTP/2 is used when the
// upstream offers it.
func standardTransport(cfg config) *http.Transport {
	return &http.Transport{
		// Never the environment's HTTP_PROXY: a pod that sets it for the app
		// points it at us, and we would send requests to ourselves.
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2: true,
		// A proxy passes the app's Accept-Encoding on as it is, and the answer
		// back as it came: no transparent gzip.
		DisableCompression:    true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: cfg.upstreamTimeout,
		TLSClientConfig:       &tls.Config{RootCAs: cfg.rootCAs, MinVersion: tls.VersionTLS12},
	}
}

// newProxyServer is the server apps talk to, with the same bounds as
// newServer's.
func newProxyServer(kind string, h http.Handler, log *zap.Logger) server {
	if kind == "standard" {
		return newServer(h, log)
	}
	return &h1.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		Logger:            log.Named("http"),
	}
}

const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 90 * time.Second
	maxHeaderBytes    = 64 << 10
)

// newServer bounds what a slow or hostile client can hold: headers must
// arrive within 10 s and fit in 64 KiB (larger ones get 431). Bodies have
// no deadline, since they stream.
func newServer(h http.Handler, log *zap.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
}
