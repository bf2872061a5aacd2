// Command goclient makes one request the way a Go app does, with
// http.DefaultClient (HTTP_PROXY and NO_PROXY from the environment), for
// reliability/clients_test.go: it prints the status, then the body.
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
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d\n%s", resp.StatusCode, body)
}
