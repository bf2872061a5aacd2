package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dinie/dinie-auth-proxy/intercept"
	"github.com/dinie/dinie-auth-proxy/internal/config"
)

// interception is the certificate authority that intercept.enabled
// starts (docs/modes-and-clients.md); nil authority when it is off.
type interception struct {
	authority *intercept.Authority
}

// newInterception creates or loads the CA and writes its files before it
// returns: the admin server, and with it /readyz, starts after this, so
// the app never sees the proxy ready before ca.crt is in place.
func newInterception(cfg *config.Settings, log *zap.Logger, reg prometheus.Registerer) (*interception, error) {
	ic := &interception{}
	if !cfg.Intercept.Enabled {
		return ic, nil
	}
	a, err := intercept.New(intercept.Config{
		Host:       cfg.UpstreamURL.Hostname(),
		CADir:      cfg.Intercept.CADir,
		KeyDir:     cfg.Intercept.KeyDir,
		CACertFile: cfg.Intercept.CACertFile,
		CAKeyFile:  cfg.Intercept.CAKeyFile,
		Logger:     log.Named("intercept"),
		Registerer: reg,
	})
	if ce, ok := errors.AsType[*intercept.ConfigError](err); ok {
		return nil, config.Invalid(ce.Key, ce.Err)
	}
	if err != nil {
		return nil, err
	}
	if err := distrustOwnCA(a, cfg.RootCAs); err != nil {
		return nil, err
	}
	ic.authority = a
	return ic, nil
}

// distrustOwnCA refuses to start when the proxy's own trust for the
// upstream would accept the interception CA: whoever held the
// intermediate's key could then read the real token on its way to Dinie.
// It happens when the proxy inherits the app's SSL_CERT_FILE=bundle.pem
// (crypto/x509 reads SSL_CERT_FILE for the system roots) or is given it as
// upstream.ca_file.
func distrustOwnCA(a *intercept.Authority, roots *x509.CertPool) error {
	if roots == nil {
		var err error
		if roots, err = x509.SystemCertPool(); err != nil {
			return nil // no system roots: nothing trusts the CA
		}
	}
	cert, err := a.TLSConfig().GetCertificate(&tls.ClientHelloInfo{ServerName: a.Host()})
	if err != nil {
		return fmt.Errorf("intercept: leaf: %w", err)
	}
	chain := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			chain.AddCert(c)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: a.Host(), Roots: roots, Intermediates: chain}); err == nil {
		return config.Invalid("upstream.ca_file or SSL_CERT_FILE", errors.New("the proxy's own trust for the upstream includes the interception CA; "+
			"give bundle.pem or ca.crt to the app only, never to the proxy"))
	}
	return nil
}

func (ic *interception) tlsConfig() *tls.Config {
	if ic.authority == nil {
		return nil
	}
	return ic.authority.TLSConfig()
}

func (ic *interception) caFile() string {
	if ic.authority == nil {
		return ""
	}
	return ic.authority.CAFile()
}

// run renews the leaf until ctx ends.
func (ic *interception) run(ctx context.Context) error {
	if ic.authority == nil {
		return nil
	}
	return ic.authority.Run(ctx)
}
