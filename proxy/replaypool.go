package proxy

import (
	"math/bits"
	"sync"
)

// Size classes of replayPool: powers of two from 4 KiB (the first step of
// a copy of unknown length, requestBody.grow) to 1 MiB (the default of
// upstream.max_replay_bytes). A copy beyond that is rare enough to be
// allocated as before.
const (
	replayMinShift = 12 // 4 KiB
	replayClasses  = 9  // up to 4 KiB << 8 = 1 MiB
)

// replayPool recycles the buffers that keep request bodies for a replay
// (sender.hold), so that an upload does not leave a copy of itself as
// garbage behind every request (bench/README.md, "What each change
// bought"). Its zero value is ready, each sender has its own.
//
// A buffer may be larger than its body, by less than twice, and the
// replayBudget counts the buffer, so that the budget still bounds the
// memory the copies hold. A copy of 2 KiB or less is not pooled (a
// 100-byte JSON body does not hold 4 KiB).
type replayPool struct {
	classes [replayClasses]sync.Pool // class i: *[]byte of capacity 4 KiB << i
}

// replayClass is the class that holds a buffer of size bytes, and false
// when such a buffer is allocated instead.
func replayClass(size int) (int, bool) {
	if size <= 1<<(replayMinShift-1) || size > 1<<(replayMinShift+replayClasses-1) {
		return 0, false
	}
	return max(bits.Len(uint(size-1))-replayMinShift, 0), true
}

// room is the capacity of the buffer get returns for size bytes: what a
// copy of that size holds in memory, and so what it takes from the
// replayBudget.
func (p *replayPool) room(size int) int {
	if i, ok := replayClass(size); ok {
		return 1 << (replayMinShift + i)
	}
	return size
}

// get returns an empty buffer with room for size bytes, and held, what
// goes back to put once no one reads it any more; held is nil when the
// buffer is not the pool's.
func (p *replayPool) get(size int) (buf []byte, held *[]byte) {
	i, ok := replayClass(size)
	if !ok {
		return make([]byte, 0, size), nil
	}
	if held, _ = p.classes[i].Get().(*[]byte); held == nil {
		b := make([]byte, 0, 1<<(replayMinShift+i))
		held = &b
	}
	return (*held)[:0], held
}

// put takes back a buffer that get returned. The caller must be sure that
// nothing reads it any more: the next get hands it to another request.
func (p *replayPool) put(held *[]byte) {
	if held == nil {
		return
	}
	if i, ok := replayClass(cap(*held)); ok && cap(*held) == 1<<(replayMinShift+i) {
		p.classes[i].Put(held)
	}
}
