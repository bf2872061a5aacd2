package proxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http/httptest"
	"sync"
	"testing"
)

// httptestTLS is httptest's certificate for a listener of a test's own,
// whose answers are written by hand; dynamic record sizing is off, so that
// the records a write makes do not depend on the connection's age. roots
// trusts the certificate.
func httptestTLS() (cfg *tls.Config, roots *x509.CertPool) {
	certSrv := httptest.NewUnstartedServer(nil)
	certSrv.StartTLS()
	defer certSrv.Close()
	roots = x509.NewCertPool()
	roots.AddCert(certSrv.Certificate())
	return &tls.Config{Certificates: certSrv.TLS.Certificates, DynamicRecordSizingDisabled: true}, roots
}

// serveEach serves every connection ln accepts on a goroutine of its own
// until the test ends; then it closes ln and every connection it accepted,
// and waits for the goroutines.
func serveEach(t *testing.T, ln net.Listener, serve func(net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	closed := false
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				// Accepted as the test ended: nobody would close it later.
				mu.Unlock()
				conn.Close()
				return
			}
			open = append(open, conn)
			mu.Unlock()
			wg.Go(func() { serve(conn) })
		}
	})
}
