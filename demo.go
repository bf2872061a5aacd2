package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dinie/dinie-auth-proxy/internal/config"
)

// The demo (docs/modes-and-clients.md, "The demo") runs the proxy against a
// mock of the Dinie API served in this process, so that a new user sees
// every mode work with no credentials. The mock answers for a host name,
// not a loopback address: clients never send requests for loopback through
// a proxy, so HTTP_PROXY and HTTPS_PROXY could not be tried against one.
// The proxy alone knows where that name is: its transports dial the mock
// for it.
const (
	demoHost     = "demo.dinie.test"
	demoUpstream = "https://" + demoHost + "/api/v3"
	// The demo's credentials: fake, and known to the mock only.
	demoClientID     = "demo-client-id"
	demoClientSecret = "demo-client-secret"
	// demoTokenLifetime is short so that a curious user sees a background
	// refresh in the logs within a couple of minutes.
	demoTokenLifetime = 120
	// The stems of the mock's tokens: fake, and shortened in its echo.
	demoTokenStem   = "dinie_at_demo_"
	demoSessionStem = "dinie_st_demo_"
)

// demoSettings are the keys --demo sets itself; config.Load refuses them
// when they are set anywhere else, so that none is silently ignored. Every
// other key applies to the demo as it would to Dinie.
var demoSettings = map[string]string{
	"upstream.url":            demoUpstream,
	"upstream.ca_file":        "",
	"auth.token_url":          "",
	"auth.client_id":          demoClientID,
	"auth.client_id_file":     "",
	"auth.client_secret":      demoClientSecret,
	"auth.client_secret_file": "",
}

// demo is the mock's listener and server, and what the proxy needs to
// reach it.
type demo struct {
	ln     net.Listener // TLS, on loopback
	srv    *http.Server
	roots  *x509.CertPool // the mock's certificate, trusted by the proxy only
	dialer net.Dialer
	// tempCADir is the interception CA's directory when the demo made it,
	// removed at close.
	tempCADir string
}

// newDemo starts listening for the mock on a free loopback port, with a
// certificate for demoHost made for this run.
func newDemo(a *app) (*demo, error) {
	cert, roots, err := demoCertificate()
	if err != nil {
		return nil, err
	}
	ln, err := a.listen("demo", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &demo{
		ln:     tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		srv:    newServer(mockDinie(), a.log.Named("demo")),
		roots:  roots,
		dialer: net.Dialer{Timeout: 10 * time.Second},
	}
	return d, nil
}

// settings are cfg as the demo runs it: trusting the mock's certificate,
// and with a directory for the interception CA when none was given.
func (d *demo) settings(cfg *config.Settings) (*config.Settings, error) {
	c := *cfg
	c.RootCAs = d.roots
	if c.Intercept.Enabled && c.Intercept.CADir == "" && c.Intercept.CACertFile == "" {
		dir, err := os.MkdirTemp("", "dinie-auth-proxy-demo-")
		if err != nil {
			return nil, fmt.Errorf("demo: directory for the interception CA: %w", err)
		}
		d.tempCADir, c.Intercept.CADir = dir, dir
	}
	return &c, nil
}

// dialContext connects the proxy's transports to the mock for demoHost,
// and to nothing else.
func (d *demo) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, _, _ := net.SplitHostPort(addr); !strings.EqualFold(host, demoHost) {
		return nil, fmt.Errorf("demo: %s is not the demo's mock", addr)
	}
	return d.dialer.DialContext(ctx, network, d.ln.Addr().String())
}

func (d *demo) served() served { return served{d.srv, d.ln} }

func (d *demo) close() {
	if d.tempCADir != "" {
		os.RemoveAll(d.tempCADir)
	}
}

// banner prints a command for each way in that is on, each one
// copy-pasteable into a shell as it is.
func (d *demo) banner(w io.Writer, cfg *config.Settings, proxyAddr net.Addr, caFile string) {
	proxyURL := "http://" + clientAddr(proxyAddr)
	const list = "/customers?limit=10"
	var b strings.Builder
	fmt.Fprintf(&b, "Demo: the proxy at %s is in front of a mock of the Dinie API, %s,\n", proxyURL, demoUpstream)
	b.WriteString("served inside this process with fake credentials. In another terminal:\n\n")
	b.WriteString("  # base URL: the app's Dinie URL is the proxy\n")
	fmt.Fprintf(&b, "  curl -s %s\n\n", shellQuote(proxyURL+list))
	b.WriteString("  # HTTP_PROXY: the app keeps Dinie's URL, with http:// (curl reads the lower-case variable)\n")
	fmt.Fprintf(&b, "  http_proxy=%s curl -s %s\n\n", shellQuote(proxyURL), shellQuote("http://"+demoHost+"/api/v3"+list))
	if cfg.Intercept.Enabled {
		fmt.Fprintf(&b, "  # HTTPS_PROXY: the app keeps Dinie's https:// URL and trusts %s\n", caFile)
		fmt.Fprintf(&b, "  https_proxy=%s curl -s --cacert %s %s\n\n", shellQuote(proxyURL), shellQuote(caFile), shellQuote(demoUpstream+list))
	} else {
		b.WriteString("  # HTTPS_PROXY: start the demo with --intercept.enabled to try it\n\n")
	}
	b.WriteString("  # a Dinie SDK's session exchange, answered with a fake customer token\n")
	fmt.Fprintf(&b, "  curl -s -X POST -H 'Content-Type: application/json' -d '{\"code\":\"dinie_bsc_demo\"}' %s\n\n",
		shellQuote(proxyURL+"/biometrics/session-exchange"))
	b.WriteString("The mock echoes what it received, the injected token shortened. Ctrl-C stops.\n")
	io.WriteString(w, b.String())
}

// clientAddr is where a client on this machine reaches addr: a wildcard
// address (listen.allow_remote) is reached on loopback.
func clientAddr(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// demoCertificate makes the mock's certificate for demoHost, and a pool
// that trusts it. It lives for this run only, in memory.
func demoCertificate() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("demo: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("demo: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: demoHost},
		DNSNames:              []string{demoHost},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("demo: certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("demo: certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots, nil
}

// mockDinie is a tiny stand-in for the Dinie API: POST /api/v3/auth/token
// and the session exchange as Dinie documents them, and every other path
// echoes what it received.
func mockDinie() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v3/auth/token", func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok || id != demoClientID || secret != demoClientSecret || r.FormValue("grant_type") != "client_credentials" {
			unauthorized(w, "invalid client credentials", "invalid_client")
			return
		}
		writeJSON(w, map[string]any{
			"access_token": demoTokenStem + randomHex(), "token_type": "bearer", "expires_in": demoTokenLifetime,
		})
	})
	mux.HandleFunc("POST /api/v3/biometrics/session-exchange", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "+demoTokenStem) {
			unauthorized(w, "the session exchange needs the partner's token", "token_expired")
			return
		}
		writeJSON(w, map[string]any{
			"access_token": demoSessionStem + randomHex(), "token_type": "bearer", "expires_in": 3600,
			"customer_id": "demo-customer-1",
		})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		if !strings.HasPrefix(auth, "Bearer "+demoTokenStem) && !strings.HasPrefix(auth, "Bearer "+demoSessionStem) {
			unauthorized(w, "missing or invalid access token", "token_expired")
			return
		}
		w.Header().Set("X-RateLimit-Limit", "1000")
		w.Header().Set("X-RateLimit-Remaining", "999")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Minute).Unix(), 10))
		// What the app sent, bounded: it is a demo, not a sink.
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		headers := map[string]string{}
		for name := range r.Header {
			if name != "Authorization" {
				headers[name] = r.Header.Get(name)
			}
		}
		writeJSON(w, map[string]any{
			"echo":          "this is the demo's mock of the Dinie API",
			"method":        r.Method,
			"host":          r.Host,
			"path":          r.URL.Path,
			"query":         r.URL.RawQuery,
			"authorization": shorten(auth),
			"request_id":    r.Header.Get("X-Request-Id"),
			"headers":       headers,
			"body":          string(body),
			// An empty page, so that a Dinie SDK's list calls work against the
			// demo too.
			"data":     []any{},
			"has_more": false,
		})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func randomHex() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// unauthorized answers 401 as Dinie does, with a problem document.
func unauthorized(w http.ResponseWriter, detail, code string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(http.StatusUnauthorized)
	json.NewEncoder(w).Encode(map[string]any{
		"type": "about:blank", "title": "Unauthorized", "status": http.StatusUnauthorized,
		"detail": detail, "code": code,
	})
}

// shorten keeps enough of a demo token to see that it changes on refresh.
func shorten(auth string) string {
	const keep = len("Bearer ") + len(demoTokenStem) + 6
	if len(auth) <= keep {
		return auth
	}
	return auth[:keep] + "…"
}
