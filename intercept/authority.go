// Package intercept is the name-constrained CA that signs the interception
// leaf for the Dinie host, and nothing else (docs/security.md, "The
// interception CA, and why it is safe to trust").
//
// New either creates a CA or loads a supplied one. A created CA is a root and
// an intermediate, both carrying critical X.509 name constraints (RFC 5280
// §4.2.1.10) that permit the upstream host name and nothing else: no other
// DNS name, none of its subdomains, no IPv4 or IPv6 address. The root signs
// the intermediate and its private key is then dropped: it is never written,
// and nothing references it once New returns. The intermediate signs one
// leaf certificate for the host, which Authority caches and renews at half
// its life; TLSConfig serves it on the proxy's side of a tunnel.
//
// Even whoever steals the intermediate's key can sign for nothing but the
// Dinie host: every certificate it signs sits below the constrained ones, and
// verifiers (Go, OpenSSL, Java) refuse a name outside the constraints.
package intercept

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Lifetimes. The CA outlives any pod because the app keeps trusting ca.crt
// for as long as it runs; a CA that expired under it would break every
// tunnel with no way back but a restart of both. A shorter life would not
// limit a stolen intermediate key either: the app trusts the CA, whatever
// its dates, until the pod ends.
const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	leafLifetime = 72 * time.Hour
	// leafBackdate absorbs clock skew between the proxy and the app.
	leafBackdate = time.Hour
	// renewRetry is the pause after a failed renewal (only a broken random
	// source can make one fail).
	renewRetry = time.Minute
)

// File names in Config.CADir and Config.KeyDir.
const (
	CACertName         = "ca.crt"
	BundleName         = "bundle.pem"
	TrustStoreName     = "truststore.p12"
	intermediateCertNm = "intermediate.crt"
	intermediateKeyNm  = "intermediate.key"
)

// Config configures an Authority. Host is required, and either CADir or
// CACertFile with CAKeyFile.
type Config struct {
	// Host is the upstream host name (upstream.url's), the one name the CA
	// may sign for. It must be a DNS name, not an IP address.
	Host string

	// CADir receives ca.crt, bundle.pem and truststore.p12, for the app to
	// read. Empty is allowed only with CACertFile: then no file is written.
	CADir string

	// KeyDir keeps the intermediate's certificate and key (mode 0600) so
	// that a restart reuses the CA the app already trusts. It must not be
	// CADir. Empty means the key lives in memory only and every start
	// creates a new CA. Ignored with CACertFile.
	KeyDir string

	// CACertFile and CAKeyFile give a CA to issue from instead of creating
	// one (e.g. a cert-manager Secret). The first certificate in CACertFile
	// is the issuing CA, which must carry the same name constraints as a
	// created one; any others are its chain, and the last one is written as
	// ca.crt. Both or neither.
	CACertFile, CAKeyFile string

	// SystemRootsFile is the PEM file whose certificates start bundle.pem.
	// Empty means the file crypto/x509 reads on Linux: $SSL_CERT_FILE,
	// else the first of the distributions' usual paths that exists.
	SystemRootsFile string

	// Now is the clock. Nil means time.Now.
	Now func() time.Time

	// Logger receives the CA's lifecycle events. Nil means no logging.
	Logger *zap.Logger

	// Registerer receives dinie_proxy_intercept_leaf_expiry_timestamp_seconds.
	// Nil means the gauge is kept but not registered.
	Registerer prometheus.Registerer
}

// ConfigError is a configuration that cannot work; Key is the dotted
// configuration key to blame, for the one-line exit-2 message.
type ConfigError struct {
	Key string
	Err error
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErr(key, format string, args ...any) error {
	return &ConfigError{Key: key, Err: fmt.Errorf(format, args...)}
}

// Authority issues and serves the interception leaf.
type Authority struct {
	host   string
	now    func() time.Time
	log    *zap.Logger
	expiry prometheus.Gauge
	caFile string

	issuer    *x509.Certificate
	issuerKey crypto.Signer
	chain     [][]byte // DER of issuer and its chain, sent after the leaf

	leaf    atomic.Pointer[leafCert]
	renewMu sync.Mutex // one renewal at a time; never held on the handshake's fast path

	tlsConfig *tls.Config
}

type leafCert struct {
	cert    *tls.Certificate
	renewAt time.Time
}

// New creates or loads the CA, writes its files and issues the first leaf.
// When it returns without error, every file in CADir is in place, so the
// caller may report ready.
func New(cfg Config) (*Authority, error) {
	host, err := normalizeHost(cfg.Host)
	if err != nil {
		return nil, err
	}
	a := &Authority{
		host: host,
		now:  cfg.Now,
		log:  cfg.Logger,
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinie_proxy_intercept_leaf_expiry_timestamp_seconds",
			Help: "When the current interception leaf certificate expires (Unix time).",
		}),
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = zap.NewNop()
	}

	var anchor *x509.Certificate
	switch {
	case cfg.CACertFile != "" || cfg.CAKeyFile != "":
		anchor, err = a.loadSupplied(cfg.CACertFile, cfg.CAKeyFile)
	case cfg.CADir == "":
		err = configErr("intercept.ca_dir", "required when intercept.enabled is true and intercept.ca_cert_file is not set")
	default:
		anchor, err = a.loadOrCreate(cfg.CADir, cfg.KeyDir)
	}
	if err != nil {
		return nil, err
	}

	if _, err := a.renew(); err != nil {
		return nil, err
	}
	if err := a.selfCheck(anchor); err != nil {
		key := "intercept.ca_dir"
		if cfg.CACertFile != "" {
			key = "intercept.ca_cert_file"
		}
		return nil, &ConfigError{Key: key, Err: err}
	}
	if cfg.CADir != "" {
		if err := writeTrustFiles(cfg.CADir, anchor, cfg.SystemRootsFile, a.log); err != nil {
			return nil, err
		}
		a.caFile = filepath.Join(cfg.CADir, CACertName)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(a.expiry); err != nil {
			return nil, fmt.Errorf("intercept: register leaf expiry gauge: %w", err)
		}
	}
	a.tlsConfig = a.newTLSConfig()
	a.log.Info("interception CA ready", zap.String("host", a.host), zap.String("ca_file", a.caFile),
		zap.Time("ca_not_after", anchor.NotAfter))
	return a, nil
}

// normalizeHost lower-cases the host and refuses what name constraints
// cannot confine to one name: an IP address, or nothing.
func normalizeHost(h string) (string, error) {
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == "" {
		return "", configErr("upstream.url", "interception needs a host name")
	}
	if net.ParseIP(h) != nil {
		return "", configErr("upstream.url", "interception needs a DNS host name, not the IP address %s: the CA excludes every IP address", h)
	}
	if strings.ContainsAny(h, "*/: ") {
		return "", configErr("upstream.url", "host %q is not a DNS name", h)
	}
	return h, nil
}

// CAFile is the path of ca.crt, the certificate apps must trust, or "" when
// no CADir was given.
func (a *Authority) CAFile() string { return a.caFile }

// Host is the one name the leaf is valid for.
func (a *Authority) Host() string { return a.host }

// TLSConfig is the server side of a tunnel. It serves the current leaf,
// fails the handshake of a ClientHello whose SNI names another host, offers
// only http/1.1 by ALPN, speaks TLS 1.2 and 1.3, and issues session tickets
// so that a client's next tunnel resumes without a full handshake. Every
// call returns the same *tls.Config: its ticket keys are what lets a
// session resume, so callers must not clone it per connection.
func (a *Authority) TLSConfig() *tls.Config { return a.tlsConfig }

func (a *Authority) newTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		Time:       a.now,
		// GetConfigForClient sees every ClientHello, resumed or not, so the
		// SNI check holds for resumptions too. A nil config keeps this one,
		// and with it the session ticket keys.
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			return nil, a.checkSNI(hello.ServerName)
		},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return a.certificate()
		},
	}
}

// checkSNI refuses another host's name. An absent SNI is served: the
// CONNECT line has already named the upstream host (the proxy refuses any
// other), and a client that meant some other name fails its own check of the
// certificate, which names only the host; refusing would only break clients
// that omit SNI, without keeping anything from anyone.
func (a *Authority) checkSNI(sni string) error {
	if sni == "" || strings.EqualFold(strings.TrimSuffix(sni, "."), a.host) {
		return nil
	}
	return fmt.Errorf("intercept: TLS server name %q is not the upstream host %s", sni, a.host)
}

// certificate is the handshake's fast path: an atomic load and a clock
// read. Past half-life (Run not running, or a laptop that slept through
// its timer) the handshake renews the leaf itself.
func (a *Authority) certificate() (*tls.Certificate, error) {
	l := a.leaf.Load()
	if a.now().Before(l.renewAt) {
		return l.cert, nil
	}
	return a.renew()
}

// renew issues a new leaf unless another caller just did.
func (a *Authority) renew() (*tls.Certificate, error) {
	a.renewMu.Lock()
	defer a.renewMu.Unlock()
	now := a.now()
	if l := a.leaf.Load(); l != nil && now.Before(l.renewAt) {
		return l.cert, nil
	}
	cert, err := issueLeaf(a.host, now, a.issuer, a.issuerKey, a.chain)
	if err != nil {
		return nil, err
	}
	a.leaf.Store(&leafCert{cert: cert, renewAt: now.Add(leafLifetime / 2)})
	a.expiry.Set(float64(cert.Leaf.NotAfter.Unix()))
	a.log.Info("interception leaf issued", zap.String("host", a.host), zap.Time("not_after", cert.Leaf.NotAfter))
	return cert, nil
}

// Run renews the leaf at half its life until ctx ends, so that handshakes
// never pay for an issuance. It returns nil when ctx ends. Without Run the
// leaf is still renewed, by the first handshake past half-life.
func (a *Authority) Run(ctx context.Context) error {
	for {
		wait := a.leaf.Load().renewAt.Sub(a.now())
		if wait <= 0 {
			if _, err := a.renew(); err != nil {
				a.log.Error("interception leaf renewal failed", zap.Error(err))
				wait = renewRetry
			} else {
				continue
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// selfCheck verifies the first leaf the way a client will: chained to the
// certificate written as ca.crt, for the host. A CA whose constraints or
// key usage rule out the host fails here, at start-up, not in every app.
func (a *Authority) selfCheck(anchor *x509.Certificate) error {
	cert := a.leaf.Load().cert
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("parse CA chain: %w", err)
		}
		inter.AddCert(c)
	}
	_, err := cert.Leaf.Verify(x509.VerifyOptions{
		DNSName: a.host, Roots: roots, Intermediates: inter, CurrentTime: a.now(),
	})
	if err != nil {
		return fmt.Errorf("a leaf for %s does not verify against the CA: %w", a.host, err)
	}
	return nil
}

var errNoSavedCA = errors.New("no saved CA")
