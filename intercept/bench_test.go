//go:build linux

package intercept

import (
	"crypto/tls"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkIssueLeaf: one leaf, key generation and signature included.
func BenchmarkIssueLeaf(b *testing.B) {
	d := newTestDirs(b)
	a := mustNew(b, Config{Host: testHost, CADir: b.TempDir(), SystemRootsFile: d.systemRoots})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := issueLeaf(a.host, now, a.issuer, a.issuerKey, a.chain); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerHandshake runs handshakes over in-memory pipes and
// reports, as server-cpu-µs/op, the CPU time of the server side alone: the
// server goroutine is locked to its thread and the thread's own CPU clock
// (RUSAGE_THREAD) is read around the loop. The client runs on other
// threads, so its certificate verification is not counted.
func BenchmarkServerHandshake(b *testing.B) {
	d := newTestDirs(b)
	a := mustNew(b, Config{Host: testHost, CADir: b.TempDir(), SystemRootsFile: d.systemRoots})
	roots := poolOf(a.issuer) // any anchor above the leaf will do for timing
	for _, bc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"full_default", &tls.Config{ServerName: testHost, RootCAs: roots}},
		// OpenSSL 3.0 clients (curl, Python, Node) offer X25519, not the
		// post-quantum hybrid Go's client prefers.
		{"full_x25519", &tls.Config{ServerName: testHost, RootCAs: roots, CurvePreferences: []tls.CurveID{tls.X25519}}},
		{"full_tls12", &tls.Config{ServerName: testHost, RootCAs: roots, MaxVersion: tls.VersionTLS12}},
		{"resumed", &tls.Config{ServerName: testHost, RootCAs: roots, ClientSessionCache: tls.NewLRUClientSessionCache(1)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			conns := make(chan net.Conn)
			done := make(chan struct{})
			defer close(done)
			go func() {
				for {
					cc, sc := net.Pipe()
					select {
					case conns <- sc:
					case <-done:
						return
					}
					c := tls.Client(cc, bc.cfg)
					if c.Handshake() == nil {
						// Take the TLS 1.3 ticket in, so the next one resumes.
						c.Read(make([]byte, 1))
					}
					cc.Close() // not c.Close: its close_notify would wait on the pipe
				}
			}()

			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var start, end syscall.Rusage
			b.ReportAllocs()
			n := 0
			syscall.Getrusage(rusageThread, &start)
			for b.Loop() {
				sc := <-conns
				s := tls.Server(sc, a.TLSConfig())
				if err := s.Handshake(); err != nil {
					b.Fatal(err)
				}
				if resumed := s.ConnectionState().DidResume; resumed != (bc.cfg.ClientSessionCache != nil) && n > 0 {
					b.Fatalf("handshake %d: resumed = %v", n, resumed)
				}
				s.Write([]byte{1})
				sc.Close()
				n++
			}
			syscall.Getrusage(rusageThread, &end)
			cpu := time.Duration(end.Utime.Nano()+end.Stime.Nano()-start.Utime.Nano()-start.Stime.Nano()) * time.Nanosecond
			b.ReportMetric(float64(cpu.Microseconds())/float64(n), "server-cpu-µs/op")
		})
	}
}

const rusageThread = 1 // RUSAGE_THREAD, Linux
