package h1

import (
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// BenchmarkReuseCheck measures what Transport adds to every request to
// keep a connection: the check after the answer (drained: a look at the
// buffer, and over TLS a read with a deadline in the past) and the peek at
// the socket before the reuse (alive).
func BenchmarkReuseCheck(b *testing.B) {
	for _, tlsOn := range []bool{false, true} {
		name := "tcp"
		if tlsOn {
			name = "tls"
		}
		b.Run(name, func(b *testing.B) {
			h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
			var srv *httptest.Server
			cfg := TransportConfig{}
			if tlsOn {
				srv = httptest.NewTLSServer(h)
				cfg.RootCAs = x509.NewCertPool()
				cfg.RootCAs.AddCert(srv.Certificate())
			} else {
				srv = httptest.NewServer(h)
			}
			defer srv.Close()
			u, _ := url.Parse(srv.URL)
			tr, err := NewTransport(u, cfg)
			if err != nil {
				b.Fatal(err)
			}
			pc, err := tr.dial(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			defer pc.conn.Close()
			b.ReportAllocs()
			for b.Loop() {
				if !pc.drained() || !pc.alive() {
					b.Fatal("an idle connection with nothing to read failed the check")
				}
			}
		})
	}
}
