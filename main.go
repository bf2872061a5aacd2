// Command dinie-auth-proxy is a sidecar that lets any application call the
// Dinie API without auth code: it exchanges the client credentials for an
// access token, keeps it fresh, and injects it into every request it
// forwards. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/dinie/dinie-auth-proxy/proxy"
	"github.com/dinie/dinie-auth-proxy/tokencache"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dinie-auth-proxy:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for invalid configuration and 1 for any other failure
// (README, "Configuration").
func exitCode(err error) int {
	if _, ok := errors.AsType[*configError](err); ok {
		return 2
	}
	return 1
}

// run is the whole program; it returns when ctx ends and every request in
// flight has finished or been cut off after shutdown.timeout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, opts, err := loadConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	if opts.help {
		return nil
	}
	if opts.version {
		fmt.Fprintln(stdout, "dinie-auth-proxy", version)
		return nil
	}
	// The live heap is a few MiB while each request allocates ~14 KB, so at
	// Go's default GOGC=100 the collector runs dozens of times a second under
	// load. 200 cut CPU per request by 12% at 128 connections for 7 MiB more
	// peak RSS (34 MiB); 400 saved no more CPU and broke the 40 MiB budget
	// (bench/README.md). A GOGC in the environment still decides.
	if getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	log, stopLog, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	defer stopLog()
	setMemoryLimit(getenv, memlimit.FromCgroup, log)

	// Bind every listener first: a busy port fails the start, not later.
	// Closed on the way out whatever happens; Shutdown has usually closed
	// them already, which makes this a no-op.
	var listeners []net.Listener
	defer func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}()
	listen := func(key, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		listeners = append(listeners, ln)
		return ln, nil
	}
	proxyLn, err := listen("listen.proxy", cfg.listenProxy)
	if err != nil {
		return err
	}
	adminLn, err := listen("listen.admin", cfg.listenAdmin)
	if err != nil {
		return err
	}
	var mock net.Listener
	if opts.demo {
		if mock, err = listen("demo", "127.0.0.1:0"); err != nil {
			return err
		}
		cfg.upstreamURL = &url.URL{Scheme: "http", Host: mock.Addr().String(), Path: "/api/v3"}
		cfg.tokenURL = cfg.upstreamURL.String() + "/auth/token"
	}

	tunnels := proxy.NewTunnels(proxyLn.Addr())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The token endpoint is called once an hour: net/http's transport serves
	// it. Requests go through the configured one.
	transportCfg := proxy.TransportConfig{ResponseHeaderTimeout: cfg.upstreamTimeout, RootCAs: cfg.rootCAs}
	standard := proxy.NewTransport(transportCfg)
	var upstream http.RoundTripper = standard
	if cfg.transport == "http1" {
		if upstream, err = proxy.NewH1Transport(cfg.upstreamURL, transportCfg); err != nil {
			return err
		}
	}
	cache, err := tokencache.New(tokencache.Config{
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
		return err
	}
	handler, err := proxy.New(proxy.Config{
		Upstream:          cfg.upstreamURL,
		Tokens:            cache,
		Transport:         upstream,
		UpstreamTimeout:   cfg.upstreamTimeout,
		MaxReplayBytes:    cfg.maxReplayBytes,
		ReplayBudgetBytes: cfg.replayBudget,
		MaxInFlight:       cfg.maxInFlight,
		Retries:           cfg.retries,
		RetryMaxWait:      cfg.retryMaxWait,
		IdempotencyKeys:   cfg.idempotencyKeys,
		Logger:            log.Named("proxy"),
		Registerer:        reg,
		ListenAddr:        proxyLn.Addr().String(),
		Tunnels:           tunnels,
	})
	if err != nil {
		return err
	}

	var draining atomic.Bool
	// Shut down in this order: the proxy, then the tunnels it opened, while
	// the admin listener and the demo's mock keep serving.
	servers := []served{
		{newProxyServer(cfg.proxyServer, handler, log), proxyLn},
		{newProxyServer(cfg.proxyServer, handler.TunnelHandler(), log), tunnels},
		{newServer(adminHandler(reg, cache.Ready, &draining), log), adminLn},
	}
	if opts.demo {
		servers = append(servers, served{newServer(mockDinie(), log), mock})
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

	// The cache outlives the servers: requests still draining after SIGTERM
	// may need a token.
	cacheCtx, stopCache := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCache()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cache.Run(cacheCtx) })
	for _, s := range servers {
		g.Go(func() error {
			if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve %s: %w", s.ln.Addr(), err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		draining.Store(true)
		log.Info("shutting down", zap.Duration("timeout", cfg.shutdownTimeout))
		shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
		defer cancel()
		for _, s := range servers {
			if err := s.srv.Shutdown(shutdownCtx); err != nil {
				log.Warn("requests cut off at shutdown.timeout", zap.Error(err))
				s.srv.Close()
			}
		}
		stopCache()
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// server is what run needs of http.Server and proxy.H1Server.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// served is a server and the listener it serves.
type served struct {
	srv server
	ln  net.Listener
}

// newProxyServer is the server apps talk to, with the same bounds as
// newServer's.
func newProxyServer(kind string, h http.Handler, log *zap.Logger) server {
	if kind == "standard" {
		return newServer(h, log)
	}
	return &proxy.H1Server{
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

// newLogger writes through a buffer flushed every second: one write(2) per
// access line was a visible share of the proxy's CPU under load. stop
// flushes and ends the flushing goroutine.
func newLogger(cfg config, w io.Writer) (log *zap.Logger, stop func(), err error) {
	level, err := zapcore.ParseLevel(cfg.logLevel)
	if err != nil {
		return nil, nil, invalid("log.level", "%q is not a level", cfg.logLevel)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.logFormat == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		encCfg.EncodeDuration = zapcore.StringDurationEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(w), FlushInterval: time.Second}
	return zap.New(zapcore.NewCore(enc, ws, level)), func() { ws.Stop() }, nil
}
