// Command upstream is the fake Dinie API that bench/run.sh puts behind
// nginx, haproxy and dinie-auth-proxy. It serves HTTPS with HTTP/1.1
// keep-alive on loopback, from a self-signed certificate made at start and
// written as PEM for the proxies to trust. Standard library only.
//
//	POST /api/v3/auth/token  a fake client-credentials token
//	GET  /api/v3/customers   a small JSON answer (about 200 bytes)
//	GET  /api/v3/blob        1 MiB of application/octet-stream
//	POST /api/v3/upload      reads and discards the body, answers small JSON
//
// It is a benchmark fixture, not a mock: it checks only that API requests
// carry "Authorization: Bearer fake-bench-token" (401 otherwise).
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

const token = `{"access_token":"fake-bench-token","token_type":"bearer","expires_in":3600}`

// customers is the small answer, about 200 bytes, like a one-item page.
const customers = `{"data":[{"id":"cus_0123456789abcdef","name":"Bench Customer Ltda","document":"12345678000190","email":"bench@example.com","created_at":"2026-03-01T12:00:00Z"}],"has_more":false}`

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on (loopback)")
	certOut := flag.String("cert-out", "", "write the self-signed certificate here (PEM)")
	keyOut := flag.String("key-out", "", "also write the certificate's private key here (PEM), for an nginx upstream")
	genOnly := flag.Bool("gen-only", false, "write the certificate (and key) and exit without serving")
	flag.Parse()
	if *certOut == "" {
		log.Fatal("upstream: -cert-out is required")
	}

	cert, certPEM, keyPEM, err := selfSigned()
	if err != nil {
		log.Fatalf("upstream: certificate: %v", err)
	}
	if err := os.WriteFile(*certOut, certPEM, 0o644); err != nil {
		log.Fatalf("upstream: %v", err)
	}
	if *keyOut != "" {
		if err := os.WriteFile(*keyOut, keyPEM, 0o600); err != nil {
			log.Fatalf("upstream: %v", err)
		}
	}
	if *genOnly {
		return
	}

	blob := make([]byte, 1<<20)
	for i := range blob {
		blob[i] = byte('a' + i%26)
	}
	blobLen := strconv.Itoa(len(blob))

	api := http.NewServeMux()
	api.HandleFunc("POST /api/v3/auth/token", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, token)
	})
	api.HandleFunc("GET /api/v3/customers", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(customers)))
		io.WriteString(w, customers)
	})
	api.HandleFunc("GET /api/v3/blob", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", blobLen)
		w.Write(blob)
	})
	api.HandleFunc("POST /api/v3/upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"received":%d}`, n)
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("upstream: %v", err)
	}
	srv := &http.Server{
		Handler:           requireToken(api),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // clients cut off at the end of a run
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"http/1.1"}, // every target speaks HTTP/1.1 to it
		},
		// A non-nil empty map turns HTTP/2 off.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	log.Fatal(srv.ServeTLS(ln, "", ""))
}

// requireToken answers 401 to an API request without the fake token, so a
// target that forgot to inject it shows up as wrk's non-2xx count.
func requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v3/auth/token" && r.Header.Get("Authorization") != "Bearer fake-bench-token" {
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// selfSigned makes a P-256 certificate for localhost and 127.0.0.1, valid
// for a day: nginx checks a DNS name, Go checks the IP.
func selfSigned() (cert tls.Certificate, certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return cert, nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return cert, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // self-signed: it is its own trust anchor
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return cert, nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return cert, nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certPEM, keyPEM, nil
}
