// Command fasthttp is a reference target for bench/run.sh, not part of the
// product: the least a Go proxy can do for the same job, with
// valyala/fasthttp on both sides and a static Bearer header, and no token
// cache, metrics, logs or problem answers. It shows how much of the gap to
// nginx is net/http's HTTP/1 server and client (bench/README.md). It lives
// in its own module so that fasthttp never enters the product's go.mod.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	upstream := flag.String("upstream", "", "upstream host:port, spoken to over HTTPS")
	caFile := flag.String("ca", "", "PEM file of the CA that signed the upstream's certificate")
	flag.Parse()
	if err := run(*listen, *upstream, *caFile); err != nil {
		fmt.Fprintln(os.Stderr, "fasthttp:", err)
		os.Exit(1)
	}
}

func run(listen, upstream, caFile string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", caFile)
	}
	client := &fasthttp.HostClient{
		Addr:      upstream,
		IsTLS:     true,
		TLSConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		MaxConns:  512,
	}
	handler := func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		req.Header.Set("Authorization", "Bearer fake-bench-token")
		req.URI().SetScheme("https")
		req.URI().SetHost(upstream)
		if err := client.Do(req, &ctx.Response); err != nil {
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		}
	}
	return fasthttp.ListenAndServe(listen, handler)
}
