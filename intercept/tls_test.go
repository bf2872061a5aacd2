package intercept

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// tlsServer serves a.TLSConfig() on a loopback listener; every accepted
// connection completes a handshake, writes "ok" and closes. Handshake
// errors arrive on the returned channel.
func tlsServer(t *testing.T, a *Authority) (addr string, serverErrs <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(c, a.TLSConfig())
			err = tc.Handshake()
			if err == nil {
				_, err = tc.Write([]byte("ok"))
			}
			errs <- err
			tc.Close()
		}
	}()
	return ln.Addr().String(), errs
}

func TestHandshake(t *testing.T) {
	d := newTestDirs(t)
	a := mustNew(t, d.config(nil))
	addr, serverErrs := tlsServer(t, a)
	roots := poolOf(readCACert(t, d.ca))
	sessions := tls.NewLRUClientSessionCache(4)

	dial := func(cfg *tls.Config) (tls.ConnectionState, error) {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			<-serverErrs
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		// TLS 1.3 tickets arrive after the handshake; reading the
		// server's bytes takes them in.
		b, _ := io.ReadAll(c)
		if err := <-serverErrs; err != nil {
			return tls.ConnectionState{}, err
		}
		if string(b) != "ok" {
			return tls.ConnectionState{}, errors.New("no data from the server")
		}
		return c.ConnectionState(), nil
	}

	t.Run("right SNI", func(t *testing.T) {
		for i, wantResumed := range []bool{false, true} {
			st, err := dial(&tls.Config{ServerName: testHost, RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}, ClientSessionCache: sessions})
			if err != nil {
				t.Fatalf("handshake %d: %v", i, err)
			}
			if st.NegotiatedProtocol != "http/1.1" {
				t.Errorf("ALPN chose %q, want http/1.1", st.NegotiatedProtocol)
			}
			if st.DidResume != wantResumed {
				t.Errorf("handshake %d: resumed = %v, want %v", i, st.DidResume, wantResumed)
			}
		}
	})
	t.Run("TLS 1.2", func(t *testing.T) {
		if _, err := dial(&tls.Config{ServerName: testHost, RootCAs: roots, MaxVersion: tls.VersionTLS12}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("SNI of the host in capitals", func(t *testing.T) {
		if _, err := dial(&tls.Config{ServerName: "API.DINIE.COM.BR", RootCAs: roots}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no SNI", func(t *testing.T) {
		// Go sends no SNI when ServerName is empty; the client then checks
		// the certificate for the host itself.
		_, err := dial(&tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			inter.AddCert(cs.PeerCertificates[1])
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: testHost, Roots: roots, Intermediates: inter})
			return err
		}})
		if err != nil {
			t.Fatal(err)
		}
	})
	for _, tt := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"another SNI", &tls.Config{ServerName: "evil.example.com", InsecureSkipVerify: true}},
		{"a subdomain's SNI", &tls.Config{ServerName: "x." + testHost, InsecureSkipVerify: true}},
		{"TLS 1.1", &tls.Config{ServerName: testHost, RootCAs: roots, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := dial(tt.cfg); err == nil {
				t.Fatal("handshake succeeded, want it refused")
			}
		})
	}
}

func TestCheckSNI(t *testing.T) {
	a := &Authority{host: testHost}
	for sni, ok := range map[string]bool{
		"": true, testHost: true, "Api.Dinie.Com.Br": true, testHost + ".": true,
		"evil.example.com": false, "x." + testHost: false, "dinie.com.br": false, "127.0.0.1": false,
	} {
		if err := a.checkSNI(sni); (err == nil) != ok {
			t.Errorf("checkSNI(%q) = %v, want accepted %v", sni, err, ok)
		}
	}
}

// TestRunRenews runs Run in a synctest bubble, whose clock moves only when
// every goroutine waits: the leaf is replaced at half its life, and Run
// returns when its context ends.
func TestRunRenews(t *testing.T) {
	d := newTestDirs(t)
	synctest.Test(t, func(t *testing.T) {
		a := mustNew(t, d.config(nil)) // Now nil: the bubble's clock
		first := a.leaf.Load().cert
		ctx, cancel := context.WithCancel(t.Context())
		ran := make(chan error, 1)
		go func() { ran <- a.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-ran; err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		}()

		time.Sleep(36*time.Hour - time.Second)
		synctest.Wait()
		if a.leaf.Load().cert != first {
			t.Fatal("leaf renewed before half its life")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		second := a.leaf.Load().cert
		if second == first {
			t.Fatal("Run did not renew the leaf at half its life")
		}
		time.Sleep(36 * time.Hour)
		synctest.Wait()
		if a.leaf.Load().cert == second {
			t.Fatal("Run did not renew the second leaf")
		}
	})
}
