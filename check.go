package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dinie/dinie-auth-proxy/internal/config"
	"github.com/dinie/dinie-auth-proxy/internal/tunnel"
)

// check is --check: with the configuration valid (Load saw to that), it
// fetches one token, as the proxy would at start-up, and prints when it
// expires, never the token. No listener is opened.
func check(ctx context.Context, cfg *config.Settings, log *zap.Logger, stdout io.Writer) error {
	// The tunnel package is the one that reads the patterns; it is asked
	// here because the check opens no tunnel.
	if err := passthroughInvalid(tunnel.CheckPatterns(cfg.Intercept.Passthrough)); err != nil {
		return err
	}
	cache, err := newTokenCache(cfg, standardTransport(cfg, nil), log, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	if _, err := cache.Token(ctx); err != nil {
		return fmt.Errorf("check: no token from %s: %w", cfg.TokenURL, err)
	}
	expiry := cache.Expiry()
	_, err = fmt.Fprintf(stdout, "ok: a token from %s, valid until %s (%s from now)\n",
		cfg.TokenURL, expiry.UTC().Format(time.RFC3339), time.Until(expiry).Round(time.Second))
	return err
}
