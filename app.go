package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/dinie/dinie-auth-proxy/internal/config"
	"github.com/dinie/dinie-auth-proxy/internal/h1"
	"github.com/dinie/dinie-auth-proxy/internal/tunnel"
	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// app is the program's parts, assembled from the configuration: the
// listeners, bound first so that a busy port fails the start, and the
// servers, token cache and handler behind them.
type app struct {
	cfg          *config.Settings
	log          *zap.Logger
	reg          *prometheus.Registry
	cache        *tokencache.Cache
	interception *interception
	demo         *demo    // nil unless --demo
	servers      []served // shut down in this order
	draining     atomic.Bool
	// listeners are closed by close, whatever happened; Shutdown has
	// usually closed them already.
	listeners []net.Listener
	// proxyAddr is where listen.proxy was bound: its port, when the key
	// asked for :0.
	proxyAddr net.Addr
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

// newApp builds the program; with demo, it brings its own Dinie and
// prints how to try it on stdout. The caller closes it.
func newApp(cfg *config.Settings, demo bool, log *zap.Logger, stdout io.Writer) (_ *app, err error) {
	a := &app{cfg: cfg, log: log, reg: newRegistry()}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	proxyLn, adminLn, err := a.bind()
	if err != nil {
		return nil, err
	}
	if demo {
		if a.demo, err = newDemo(a); err != nil {
			return nil, err
		}
		if a.cfg, err = a.demo.settings(cfg); err != nil {
			return nil, err
		}
	}
	// The CA's files are written before the admin server, and with it
	// /readyz, starts.
	if a.interception, err = newInterception(a.cfg, log, a.reg); err != nil {
		return nil, err
	}
	standard, requests, err := a.upstream()
	if err != nil {
		return nil, err
	}
	if a.cache, err = newTokenCache(a.cfg, standard, log, a.reg); err != nil {
		return nil, err
	}
	handler, err := a.handler(requests)
	if err != nil {
		return nil, err
	}
	a.servers = a.newServers(handler, proxyLn, adminLn)
	log.Info("listening",
		zap.String("version", readBuild().version),
		zap.String("proxy_addr", proxyLn.Addr().String()),
		zap.String("admin_addr", adminLn.Addr().String()),
		zap.String("upstream", a.cfg.UpstreamURL.String()))
	log.Sync() // the start is worth seeing at once; the rest may wait a second
	if a.demo != nil {
		a.demo.banner(stdout, a.cfg, a.proxyAddr, a.interception.caFile())
	}
	return a, nil
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		readBuild().gauge())
	return reg
}

// upstream returns the two ways to Dinie: net/http's transport, which
// fetches the token once an hour, and the configured one, which sends the
// requests.
func (a *app) upstream() (standard *http.Transport, requests http.RoundTripper, err error) {
	var dial dialFunc
	if a.demo != nil {
		dial = a.demo.dialContext
	}
	standard = standardTransport(a.cfg, dial)
	if a.cfg.Transport == config.Standard {
		return standard, standard, nil
	}
	requests, err = h1.NewTransport(a.cfg.UpstreamURL, h1.TransportConfig{
		ResponseHeaderTimeout: a.cfg.UpstreamTimeout, RootCAs: a.cfg.RootCAs, DialContext: dial,
		// The proxy's rule: a bare Idempotency-Key does not make a request
		// resend-safe (docs/operations.md, "Retries").
		Resendable: proxy.Resendable,
	})
	return standard, requests, err
}

// dialFunc connects to an address, as net.Dialer.DialContext does.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// newTokenCache is the token cache of the proxy, and of --check.
func newTokenCache(cfg *config.Settings, standard *http.Transport, log *zap.Logger, reg prometheus.Registerer) (*tokencache.Cache, error) {
	return tokencache.New(tokencache.Config{
		TokenURL:         cfg.TokenURL,
		ClientID:         cfg.ClientID,
		ClientIDFile:     cfg.ClientIDFile,
		ClientSecret:     cfg.ClientSecret,
		ClientSecretFile: cfg.ClientSecretFile,
		RefreshBefore:    cfg.RefreshBefore,
		FetchTimeout:     cfg.UpstreamTimeout,
		MaxWait:          cfg.UpstreamTimeout,
		HTTPClient:       &http.Client{Transport: standard},
		Logger:           log.Named("token"),
		Registerer:       reg,
	})
}

// handler is what apps talk to; it runs its own servers, one for the app's
// connections and one for the requests inside the tunnels it opens.
func (a *app) handler(requests http.RoundTripper) (*proxy.Handler, error) {
	cfg := a.cfg
	h, err := proxy.New(proxy.Config{
		Upstream:          cfg.UpstreamURL,
		Tokens:            a.cache,
		Transport:         requests,
		RecycleRequests:   a.recycleRequests(),
		UpstreamTimeout:   cfg.UpstreamTimeout,
		MaxReplayBytes:    cfg.MaxReplayBytes,
		ReplayBudgetBytes: cfg.ReplayBudgetBytes,
		MaxInFlight:       cfg.MaxInFlight,
		Retries:           cfg.Retries,
		RetryMaxWait:      cfg.RetryMaxWait,
		IdempotencyKeys:   cfg.IdempotencyKeys,
		PassAnyBearer:     cfg.PassBearer == config.PassAny,
		SessionTokensMax:  cfg.SessionTokensMax,
		Logger:            a.log.Named("proxy"),
		Registerer:        a.reg,
		ListenAddr:        a.proxyAddr.String(),
		NewServer:         a.proxyServer,
		Intercept:         a.interception.tlsConfig(),
		InterceptCAFile:   a.interception.caFile(),
		Passthrough:       cfg.Intercept.Passthrough,
		MaxTunnels:        cfg.MaxTunnels,
	})
	if err != nil {
		return nil, passthroughInvalid(err)
	}
	return h, nil
}

// passthroughInvalid is invalid configuration (exit 2) for a pattern of
// intercept.passthrough the tunnel package refused, and err unchanged for
// anything else: the serving proxy and --check report it alike.
func passthroughInvalid(err error) error {
	if pe, ok := errors.AsType[*tunnel.PatternError](err); ok {
		return config.Invalid("intercept.passthrough", pe.Err)
	}
	return err
}

// newServers puts a server on each listener: the proxy (with the tunnels
// it opened) first, while the admin listener and the demo's mock keep
// serving.
func (a *app) newServers(handler *proxy.Handler, proxyLn, adminLn net.Listener) []served {
	servers := []served{
		{handler, proxyLn},
		{newServer(adminHandler(a.reg, a.cache.Ready, &a.draining), a.log), adminLn},
	}
	if a.demo != nil {
		servers = append(servers, a.demo.served())
	}
	return servers
}

// bind opens the proxy's and the admin listener, first of all, so that a
// busy port fails the start before anything else is done.
func (a *app) bind() (proxyLn, adminLn net.Listener, err error) {
	if proxyLn, err = a.listen("listen.proxy", a.cfg.ListenProxy); err != nil {
		return nil, nil, err
	}
	if !a.cfg.AllowRemote {
		if err := loopbackOnly(a.cfg.ListenProxy, proxyLn.Addr()); err != nil {
			return nil, nil, err
		}
	}
	if adminLn, err = a.listen("listen.admin", a.cfg.ListenAdmin); err != nil {
		return nil, nil, err
	}
	a.proxyAddr = proxyLn.Addr()
	return proxyLn, adminLn, nil
}

// loopbackOnly refuses a proxy listener that others can reach
// (docs/configuration.md, "Mistakes it refuses"): the configuration checks
// the text, but a host name such as localhost is resolved by /etc/hosts or
// DNS, so the address bound decides.
func loopbackOnly(configured string, bound net.Addr) error {
	if tcp, ok := bound.(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return nil
	}
	return config.Invalid("listen.proxy", fmt.Errorf(
		"%s was bound to %s, not a loopback address: whoever reaches it calls Dinie with your credentials; "+
			"use 127.0.0.1, or set listen.allow_remote to true", configured, bound))
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
	if a.demo != nil {
		a.demo.close()
	}
}

// serve runs until ctx ends, then shuts down: /readyz turns 503, the
// servers stop accepting and let their requests finish for up to
// shutdown.timeout (docs/operations.md, "Health and metrics").
func (a *app) serve(ctx context.Context) error {
	// The cache outlives the servers: requests still draining after SIGTERM
	// may need a token.
	cacheCtx, stopCache := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCache()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.cache.Run(cacheCtx) })
	g.Go(func() error { return a.interception.run(cacheCtx) })
	g.Go(func() error { a.announceReady(gctx); return nil })
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
	a.log.Info("shutting down", zap.Duration("timeout", a.cfg.ShutdownTimeout))
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
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
func standardTransport(cfg *config.Settings, dial dialFunc) *http.Transport {
	if dial == nil {
		dial = (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext
	}
	return &http.Transport{
		// Never the environment's HTTP_PROXY: a pod that sets it for the app
		// points it at us, and we would send requests to ourselves.
		Proxy:             nil,
		DialContext:       dial,
		ForceAttemptHTTP2: true,
		// A proxy passes the app's Accept-Encoding on as it is, and the answer
		// back as it came: no transparent gzip.
		DisableCompression:    true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: cfg.UpstreamTimeout,
		TLSClientConfig:       &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
	}
}

// recycleRequests says whether the handler and its server may reuse a
// request's memory for the next one: only behind h1's transport, which
// keeps nothing of a request once it has answered; net/http's may still
// be writing it then.
func (a *app) recycleRequests() bool { return a.cfg.Transport == config.HTTP1 }

// proxyServer is the handler's server, for the app's connections and for
// the requests inside tunnels, recycling requests as the handler does.
func (a *app) proxyServer(h http.Handler) proxy.Server {
	return newProxyServer(a.cfg.ProxyServer, a.recycleRequests(), h, a.log)
}

// newProxyServer is the server apps talk to, with the same bounds as
// newServer's. recycle says the handler's transport keeps nothing of a
// request once it has answered (h1.Server's RecycleRequests).
func newProxyServer(kind config.Implementation, recycle bool, h http.Handler, log *zap.Logger) server {
	if kind == config.Standard {
		return newServer(h, log)
	}
	return &h1.Server{
		Handler:           h,
		RecycleRequests:   recycle,
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
