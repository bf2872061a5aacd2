package h1

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedDialer dials for real, but each dial past the first `free` waits
// for a token on open (or its context), so that a test decides when dials
// finish; it records how many were in progress at once.
type gatedDialer struct {
	free    int64
	open    chan struct{}
	started chan struct{} // one send per dial, once it counts as in progress
	total   atomic.Int64
	now     atomic.Int64
	most    atomic.Int64
}

func newGatedDialer(free int64) *gatedDialer {
	return &gatedDialer{free: free, open: make(chan struct{}), started: make(chan struct{}, 1024)}
}

func (d *gatedDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	n := d.total.Add(1)
	cur := d.now.Add(1)
	defer d.now.Add(-1)
	for {
		m := d.most.Load()
		if cur <= m || d.most.CompareAndSwap(m, cur) {
			break
		}
	}
	d.started <- struct{}{}
	if n > d.free {
		select {
		case <-d.open:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func boundedTransport(t *testing.T, srv *httptest.Server, d *gatedDialer, maxDialing int) *Transport {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	tr, err := NewTransport(u, TransportConfig{ResponseHeaderTimeout: 5 * time.Second, DialContext: d.DialContext,
		MaxDialing: maxDialing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

type result struct {
	status int
	err    error
}

func send(ctx context.Context, tr *Transport, method, url string) result {
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("x")
	}
	req, _ := http.NewRequestWithContext(ctx, method, url, body)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return result{err: err}
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return result{status: resp.StatusCode}
}

// A burst of requests on an empty pool opens at most MaxDialing
// connections at once; the others wait their turn, and all are answered.
func TestDialsAreBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	d := newGatedDialer(0)
	tr := boundedTransport(t, srv, d, 2)
	const requests = 6
	results := make(chan result, requests)
	for range requests {
		go func() { results <- send(t.Context(), tr, http.MethodGet, srv.URL+"/") }()
	}
	// Two dials wait at the gate; every other request must wait for a
	// turn, not dial.
	waitForWaiters(t, tr, requests-2)
	close(d.open)
	for range requests {
		if r := <-results; r.err != nil || r.status != http.StatusOK {
			t.Fatalf("request: %d %v", r.status, r.err)
		}
	}
	if m := d.most.Load(); m > 2 {
		t.Errorf("%d dials were in progress at once, want at most 2", m)
	}
}

// A request that waits for a turn takes a connection another request is
// done with, without waiting for a dial.
func TestAWaitingRequestTakesAReturnedConnection(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
	}))
	t.Cleanup(srv.Close)
	d := newGatedDialer(1) // the first dial goes through, later ones wait
	tr := boundedTransport(t, srv, d, 1)

	slow := make(chan result, 1)
	go func() { slow <- send(t.Context(), tr, http.MethodGet, srv.URL+"/slow") }()
	<-d.started // A's connection, open and busy with /slow
	dialling := make(chan result, 1)
	go func() { dialling <- send(t.Context(), tr, http.MethodGet, srv.URL+"/b") }()
	<-d.started // B's dial, held at the gate: the only dial slot is taken
	waiting := make(chan result, 1)
	go func() { waiting <- send(t.Context(), tr, http.MethodPost, srv.URL+"/c") }()
	waitForWaiters(t, tr, 1)

	close(release) // A is answered and hands its connection to C
	if r := <-slow; r.err != nil {
		t.Fatal(r.err)
	}
	select {
	case r := <-waiting:
		if r.err != nil || r.status != http.StatusOK {
			t.Fatalf("waiting request: %d %v", r.status, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request did not get the connection A was done with")
	}
	d.open <- struct{}{}
	if r := <-dialling; r.err != nil {
		t.Fatal(r.err)
	}
	if n := d.total.Load(); n != 2 {
		t.Errorf("%d dials, want 2: the waiting request must reuse A's connection", n)
	}
}

// A connection handed to a waiting request is checked as any reuse is: a
// connection the server closed meanwhile is dropped, and the request, a
// POST that cannot go again, is sent on a new one.
func TestAHandedOverConnectionIsChecked(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	d := newGatedDialer(1)
	tr := boundedTransport(t, srv, d, 1)

	// A connection whose server end is gone, taken out of the pool.
	if r := send(t.Context(), tr, http.MethodGet, srv.URL+"/"); r.err != nil {
		t.Fatal(r.err)
	}
	<-d.started
	tr.mu.Lock()
	dead := tr.idle[0]
	tr.idle = nil
	tr.mu.Unlock()
	srv.CloseClientConnections()
	for give := time.Now().Add(10 * time.Second); dead.alive(); {
		if time.Now().After(give) {
			t.Fatal("the connection never showed the server's close")
		}
		time.Sleep(time.Millisecond)
	}

	// Take the only dial slot with a dial held at the gate, queue a POST,
	// and hand it the dead connection.
	dialling := make(chan result, 1)
	go func() { dialling <- send(t.Context(), tr, http.MethodGet, srv.URL+"/a") }()
	<-d.started
	waiting := make(chan result, 1)
	go func() { waiting <- send(t.Context(), tr, http.MethodPost, srv.URL+"/b") }()
	waitForWaiters(t, tr, 1)
	tr.put(dead)

	d.open <- struct{}{} // the held dial ends: its slot goes to the POST
	if r := <-dialling; r.err != nil || r.status != http.StatusOK {
		t.Fatalf("request: %d %v", r.status, r.err)
	}
	var r result
	select {
	case d.open <- struct{}{}: // the POST dials a connection of its own
		r = <-waiting
	case r = <-waiting: // it took the dead one
	}
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("POST handed a connection the server closed: %d %v", r.status, r.err)
	}
}

// A request that gives up while waiting leaves the queue, and a turn sent
// to it as it gave up goes to the next one: no dial slot or connection is
// lost, however the two race.
func TestWaitersThatGiveUpLoseNoTurn(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	d := newGatedDialer(1 << 62) // no gate
	tr := boundedTransport(t, srv, d, 1)

	var wg sync.WaitGroup
	var answered, gaveUp atomic.Int64
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := t.Context()
			if i%3 == 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				go cancel()
			}
			r := send(ctx, tr, http.MethodGet, srv.URL+"/")
			switch {
			case r.err == nil:
				answered.Add(1)
			case ctx.Err() != nil: // given up while waiting, dialling or sending
				gaveUp.Add(1)
			default:
				t.Errorf("request: %v", r.err)
			}
		}()
	}
	wg.Wait()
	if answered.Load()+gaveUp.Load() != 200 {
		t.Errorf("%d answered and %d gave up, of 200", answered.Load(), gaveUp.Load())
	}
	if dialing, waiters := poolTurns(tr); dialing != 0 || waiters != 0 {
		t.Errorf("after the burst: %d dials counted, %d waiters; want none", dialing, waiters)
	}
}

// The race in the test above, made to happen: a waiter is handed a dial
// slot just as it gives up. Whichever way it goes (the waiter dials and
// fails, or leaves and passes the slot on) the slot must come back.
func TestATurnSentAsTheWaiterGivesUpIsPassedOn(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	tr := boundedTransport(t, srv, newGatedDialer(1<<62), 1)
	for range 20 {
		tr.mu.Lock()
		tr.dialing = 1 // a slot held by nobody, to hand over below
		tr.mu.Unlock()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan result, 1)
		go func() { done <- send(ctx, tr, http.MethodGet, srv.URL+"/") }()
		waitForWaiters(t, tr, 1)
		tr.mu.Lock()
		cancel()
		w, _ := tr.nextWaiter()
		w <- nil
		tr.mu.Unlock()
		<-done
		if dialing, waiters := poolTurns(tr); dialing != 0 || waiters != 0 {
			t.Fatalf("a slot handed to a waiter that gave up: %d dials counted, %d waiters; want none", dialing, waiters)
		}
	}
}

// A waiting request that gives up says why, as a dial error: nothing of
// it was sent.
func TestAWaiterThatGivesUpGetsADialError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	d := newGatedDialer(0)
	tr := boundedTransport(t, srv, d, 1)
	dialling := make(chan result, 1)
	go func() { dialling <- send(t.Context(), tr, http.MethodGet, srv.URL+"/") }()
	<-d.started
	ctx, cancel := context.WithCancel(t.Context())
	waiting := make(chan result, 1)
	go func() { waiting <- send(ctx, tr, http.MethodGet, srv.URL+"/") }()
	waitForWaiters(t, tr, 1)
	cancel()
	r := <-waiting
	var de *DialError
	if !errors.As(r.err, &de) || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("waiting request that gave up: %v, want a DialError for context.Canceled", r.err)
	}
	d.open <- struct{}{}
	if r := <-dialling; r.err != nil {
		t.Fatal(r.err)
	}
}

// poolTurns is how many dials tr counts and how many requests wait.
func poolTurns(tr *Transport) (dialing, waiters int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.dialing, len(tr.waiters)
}

// waitForWaiters waits until n requests wait for a turn.
func waitForWaiters(t *testing.T, tr *Transport, n int) {
	t.Helper()
	for give := time.Now().Add(10 * time.Second); ; {
		_, got := poolTurns(tr)
		if got >= n {
			return
		}
		if time.Now().After(give) {
			t.Fatalf("%d requests wait for a turn, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}
