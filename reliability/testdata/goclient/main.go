// Command goclient makes one request the way a Go app does, with
// http.DefaultClient (HTTP_PROXY, HTTPS_PROXY and NO_PROXY from the
// environment, SSL_CERT_FILE for the roots), for reliability/clients_test.go:
// it prints the status, then the body. A refused CONNECT is an error to Go,
// which keeps only the status line's reason phrase: it prints 0, then the
// error.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	resp, err := http.Get(os.Args[1])
	if err != nil {
		fmt.Printf("0\n%v\n", err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d\n%s", resp.StatusCode, body)
}
