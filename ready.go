package main

import (
	"context"
	"net"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/dinie/dinie-auth-proxy/internal/config"
)

// announceReady logs one ready line once the first token is held
// (docs/operations.md): what an operator reads to see that the sidecar
// came up as meant, with no secret in it. The cache has no event for
// this; looking every 100 ms costs nothing, and a log line needs no more
// promptness.
func (a *app) announceReady(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for a.cache.Ready() != nil {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	a.log.Info("ready",
		zap.String("upstream", hostPort(a.cfg.UpstreamURL)),
		zap.String("proxy_addr", a.proxyAddr.String()),
		zap.Strings("ways_in", waysIn(a.cfg)),
		zap.Strings("credentials", a.cfg.CredentialSources()))
}

// hostPort is u's host and port, the scheme's default port if it names
// none.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// waysIn are the ways apps reach the upstream through the proxy
// (docs/modes-and-clients.md).
func waysIn(cfg *config.Settings) []string {
	ways := []string{"base_url", "http_proxy"}
	if cfg.Intercept.Enabled {
		ways = append(ways, "https_proxy")
	}
	if len(cfg.Intercept.Passthrough) > 0 {
		ways = append(ways, "passthrough")
	}
	return ways
}
