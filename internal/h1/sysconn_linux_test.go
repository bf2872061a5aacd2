package h1

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestSysConnBehavesAsNetConn holds sysConn's reads and writes to what
// net's TCP connection reports: callers classify its errors by their
// type and operation.
func TestSysConnBehavesAsNetConn(t *testing.T) {
	t.Run("data both ways, larger than the socket buffers", func(t *testing.T) {
		c, s := tcpPair(t)
		sc := newSysConn(c)
		want := make([]byte, 8<<20)
		for i := range want {
			want[i] = byte(i)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := sc.Write(want)
			errc <- err
		}()
		got, err := io.ReadAll(io.LimitReader(s, int64(len(want))))
		if err != nil || string(got) != string(want) {
			t.Fatalf("read %d bytes, %v", len(got), err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		s.Write([]byte("back"))
		buf := make([]byte, 10)
		n, err := io.ReadAtLeast(sc, buf, 4)
		if err != nil || string(buf[:n]) != "back" {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
	})
	t.Run("deadline: a read timeout", func(t *testing.T) {
		c, _ := tcpPair(t)
		sc := newSysConn(c)
		sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := sc.Read(make([]byte, 1))
		var oe *net.OpError
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "read" || !oe.Timeout() {
			t.Fatalf("got %#v, want a read OpError that is a timeout", err)
		}
		if !commonNetReadError(err) {
			t.Error("Server would not take it for a read error")
		}
	})
	t.Run("peer closes: EOF", func(t *testing.T) {
		c, s := tcpPair(t)
		sc := newSysConn(c)
		s.Write([]byte("x"))
		s.Close()
		if b, err := io.ReadAll(sc); err != nil || string(b) != "x" {
			t.Fatalf("read %q, %v", b, err)
		}
		if n, err := sc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("read %d, %v; want 0, EOF", n, err)
		}
	})
	t.Run("peer resets: a write error", func(t *testing.T) {
		c, s := tcpPair(t)
		sc := newSysConn(c)
		s.SetLinger(0)
		s.Close()
		var err error
		for range 100 {
			if _, err = sc.Write(make([]byte, 64<<10)); err != nil {
				break
			}
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "write" || !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("got %v, want a write OpError for a reset", err)
		}
	})
	t.Run("closed: a blocked read returns", func(t *testing.T) {
		c, _ := tcpPair(t)
		sc := newSysConn(c)
		errc := make(chan error, 1)
		go func() {
			_, err := sc.Read(make([]byte, 1))
			errc <- err
		}()
		time.Sleep(10 * time.Millisecond) // let it park; the test holds either way
		sc.Close()
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("got %v, want net.ErrClosed", err)
		}
	})
	t.Run("not TCP: left alone", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		if newSysConn(a) != a {
			t.Error("a pipe was wrapped")
		}
	})
}

// TestRawIOIsUsed guards the fast path's raw reads and writes, which a
// change to how connections are set up could silently drop: every other
// test passes with net's own I/O.
func TestRawIOIsUsed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	tr, err := NewTransport(u, TransportConfig{})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := tr.dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.conn.Close()
	if _, ok := pc.conn.(*sysConn); !ok {
		t.Errorf("Transport reads and writes through %T", pc.conn)
	}

	c, _ := tcpPair(t)
	s := &Server{Handler: http.NotFoundHandler()}
	s.init()
	defer s.Close()
	sc := s.newConn(c)
	if _, ok := sc.lr.r.(*sysConn); !ok {
		t.Errorf("Server reads through %T", sc.lr.r)
	}
	if _, ok := sc.sock.(*sysConn); !ok {
		t.Errorf("Server writes through %T", sc.sock)
	}

	// Tunnels take the connection over: their TLS or relay reads it.
	hijacked := make(chan net.Conn, 1)
	hs := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
		}
		hijacked <- conn
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	defer hs.Close()
	app, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	io.WriteString(app, "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n")
	conn := <-hijacked
	defer conn.Close()
	if _, ok := conn.(*sysConn); !ok {
		t.Errorf("Hijack hands over %T", conn)
	}
}
