package proxy

import "testing"

func TestReplayPoolSizes(t *testing.T) {
	tests := []struct {
		size   int
		pooled int // capacity of the buffer; 0: allocated to size, not pooled
	}{
		{1, 0},
		{2 << 10, 0}, // a small body does not hold 4 KiB
		{2<<10 + 1, 4 << 10},
		{4 << 10, 4 << 10},
		{4<<10 + 1, 8 << 10},
		{64 << 10, 64 << 10}, // the bench's upload
		{64<<10 + 1, 128 << 10},
		{1 << 20, 1 << 20},
		{1<<20 + 1, 0}, // beyond the largest class
	}
	var p replayPool
	for _, tt := range tests {
		buf, held := p.get(tt.size)
		if len(buf) != 0 {
			t.Errorf("size %d: len %d, want an empty buffer", tt.size, len(buf))
		}
		switch {
		case tt.pooled == 0 && (held != nil || cap(buf) != tt.size):
			t.Errorf("size %d: capacity %d, pooled %v; want %d, not pooled", tt.size, cap(buf), held != nil, tt.size)
		case tt.pooled != 0 && (held == nil || cap(buf) != tt.pooled || cap(*held) != tt.pooled):
			t.Errorf("size %d: capacity %d, pooled %v; want %d, pooled", tt.size, cap(buf), held != nil, tt.pooled)
		}
		// The budget counts bytes of body: a buffer holds less than twice.
		if cap(buf) >= 2*tt.size && tt.size > 1 {
			t.Errorf("size %d: capacity %d, twice the body or more", tt.size, cap(buf))
		}
	}
}

func TestReplayPoolTakesBackOnlyItsOwn(t *testing.T) {
	var p replayPool
	p.put(nil)
	// Several: under the race detector, sync.Pool drops some of what it
	// is given.
	for range 10 {
		odd := make([]byte, 0, 5000) // no class's capacity
		p.put(&odd)
	}
	for range 10 {
		if buf, _ := p.get(5000); cap(buf) == 5000 {
			t.Fatal("a buffer of no class's capacity was pooled")
		}
	}
}
