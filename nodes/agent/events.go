package agent

import (
	"context"
	"sync"
	"time"

	"berth.dev/berth/nodes/api"
)

// defaultEventBuffer bounds the events kept for readers that ask for past
// ones; a follower that falls further behind than this skips ahead.
const defaultEventBuffer = 1024

// eventLog is a bounded ring of events with followers. Appending never
// blocks: each follower reads at its own pace by sequence number.
type eventLog struct {
	mu     sync.Mutex
	buf    []api.Event
	next   uint64        // sequence number of the next event
	notify chan struct{} // closed and replaced on every append
}

func newEventLog(size int) *eventLog {
	if size <= 0 {
		size = defaultEventBuffer
	}
	return &eventLog{buf: make([]api.Event, size), notify: make(chan struct{})}
}

func (l *eventLog) add(e api.Event) {
	l.mu.Lock()
	l.buf[l.next%uint64(len(l.buf))] = e
	l.next++
	close(l.notify)
	l.notify = make(chan struct{})
	l.mu.Unlock()
}

// from returns the events from sequence number seq on (skipping those no
// longer kept), the sequence number after them, and a channel closed on
// the next append.
func (l *eventLog) from(seq uint64) ([]api.Event, uint64, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if oldest := l.next - min(l.next, uint64(len(l.buf))); seq < oldest {
		seq = oldest
	}
	out := make([]api.Event, 0, l.next-seq)
	for ; seq < l.next; seq++ {
		out = append(out, l.buf[seq%uint64(len(l.buf))])
	}
	return out, seq, l.notify
}

// snapshot returns the kept events recorded after since.
func (l *eventLog) snapshot(since time.Time) []api.Event {
	evs, _, _ := l.from(0)
	out := evs[:0]
	for _, e := range evs {
		if e.Time.After(since) {
			out = append(out, e)
		}
	}
	return out
}

// stream sends the kept events recorded after since, then, with follow,
// new ones until ctx ends; the channel is closed at the end.
func (l *eventLog) stream(ctx context.Context, since time.Time, follow bool) <-chan api.Event {
	out := make(chan api.Event, 64)
	go func() {
		defer close(out)
		seq := uint64(0)
		for {
			evs, next, notify := l.from(seq)
			seq = next
			for _, e := range evs {
				if !e.Time.After(since) {
					continue
				}
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
			if !follow {
				return
			}
			select {
			case <-notify:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
