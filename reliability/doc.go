// Package reliability proves dinie-auth-proxy under load, faults and hostile
// input. It holds only tests, behind the build tag reliability so that
// `go test ./...` stays quick:
//
//	go test -race -tags reliability -count=1 -v ./reliability/
//
// The tests build the real binary once and drive it over loopback against a
// fake Dinie (token endpoint and API) whose faults they control.
package reliability
