// Command tunnelload is bench/tunnel.sh's load generator and CA tool. wrk
// cannot send CONNECT, so the tunnel scenario needs its own client; every
// target of that scenario is driven by this one, for a like-for-like CPU
// comparison of the targets (the client's own CPU is not counted).
//
//	tunnelload -gen DIR -host localhost       # CA in DIR/ca and DIR/key, nginx leaf in DIR
//	tunnelload -url URL [-proxy URL] [-ca FILE] [-conns 16] [-duration 4s] [-new-conn] [-no-resume]
//
// It prints "BENCH requests duration_us p50_us p99_us errors non2xx", the
// first six fields of the line bench/get.lua prints for wrk.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dinie/dinie-auth-proxy/intercept"
)

func main() {
	gen := flag.String("gen", "", "create a CA in DIR/ca (files) and DIR/key, write a leaf for -host as DIR/leaf.pem and DIR/leaf-key.pem, and exit")
	host := flag.String("host", "localhost", "the host the CA signs for (-gen)")
	target := flag.String("url", "", "URL to GET")
	proxy := flag.String("proxy", "", "HTTPS_PROXY to tunnel through")
	caFile := flag.String("ca", "", "PEM roots to trust")
	conns := flag.Int("conns", 16, "connections, one request at a time each")
	duration := flag.Duration("duration", 4*time.Second, "how long to send")
	warmup := flag.Duration("warmup", 0, "load before counting, not measured")
	newConn := flag.Bool("new-conn", false, "a new connection (tunnel) per request")
	noResume := flag.Bool("no-resume", false, "no TLS session resumption: a full handshake per connection")
	flag.Parse()
	if *gen != "" {
		if err := generate(*gen, *host); err != nil {
			log.Fatal(err)
		}
		return
	}

	tr := &http.Transport{
		MaxIdleConnsPerHost: *conns,
		MaxConnsPerHost:     *conns,
		DisableKeepAlives:   *newConn,
		DisableCompression:  true,
		TLSClientConfig:     &tls.Config{},
	}
	if !*noResume {
		tr.TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(*conns * 2)
	}
	if *proxy != "" {
		u, err := url.Parse(*proxy)
		if err != nil {
			log.Fatal(err)
		}
		tr.Proxy = http.ProxyURL(u)
	}
	if *caFile != "" {
		pemBytes, err := os.ReadFile(*caFile)
		if err != nil {
			log.Fatal(err)
		}
		tr.TLSClientConfig.RootCAs = x509.NewCertPool()
		tr.TLSClientConfig.RootCAs.AppendCertsFromPEM(pemBytes)
	}
	client := &http.Client{Transport: tr}
	if *warmup > 0 {
		load(client, *target, *conns, *warmup)
	}
	lat, errs, bad, elapsed := load(client, *target, *conns, *duration)
	slices.Sort(lat)
	pct := func(p float64) int64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds()
	}
	fmt.Printf("BENCH %d %d %d %d %d %d\n", len(lat), elapsed.Microseconds(), pct(0.5), pct(0.99), errs, bad)
}

// load sends GETs on conns goroutines for d and returns the latencies of
// the answered ones.
func load(client *http.Client, target string, conns int, d time.Duration) (lat []time.Duration, errs, bad int64, elapsed time.Duration) {
	var mu sync.Mutex
	var nErr, nBad atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for range conns {
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(stop) {
				t0 := time.Now()
				resp, err := client.Get(target)
				if err != nil {
					nErr.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					nBad.Add(1)
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return lat, nErr.Load(), nBad.Load(), time.Since(start)
}

// generate makes the CA the sidecar will reuse (intercept.key_dir) and a
// leaf for nginx from it, so that the client trusts one ca.crt for both.
func generate(dir, host string) error {
	a, err := intercept.New(intercept.Config{Host: host, CADir: filepath.Join(dir, "ca"), KeyDir: filepath.Join(dir, "key")})
	if err != nil {
		return err
	}
	cert, err := a.TLSConfig().GetCertificate(&tls.ClientHelloInfo{ServerName: host})
	if err != nil {
		return err
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "leaf.pem"), chain, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "leaf-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}
